"""Issue 17 point 7: a packet once started must end within `packet_timeout` whatever the keep-alive, and
the bytes of partly received packets (and WebSocket frames) are bounded node-wide."""

from __future__ import annotations

import asyncio
import os
import struct

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connection, make_device, wait_until
from .wire import RawClient, ack_packet, connect_packet, publish_packet

ACCEPTED = b"\x20\x02\x00\x00"
UPGRADE = (
    b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
)


async def _session(gateway: Gateway, token: str, client_id: str, *, keepalive: int = 0) -> RawClient:
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet(client_id, token, keepalive=keepalive))
    assert await raw.read_packet() == ACCEPTED
    return raw


def _half(topic: str, size: int, sent: int) -> tuple[bytes, bytes]:
    """A QoS 1 PUBLISH of `size` payload bytes split in two: its fixed header and first `sent` bytes
    after it, and the rest."""
    whole = publish_packet(topic, b"p" * size, packet_id=1)
    header = 1 + next(i for i in range(1, 5) if not whole[i] & 0x80)
    return whole[: header + sent], whole[header + sent :]


async def _last_reason(api: httpx.AsyncClient, device: str) -> str | None:
    log = (await connection(api, "acme", device))["log"]
    return str(log[0]["reason"]) if log and log[0]["event"] == "disconnected" else None


def _held(gateway: Gateway) -> int:
    assert gateway.broker is not None
    return gateway.broker.partial_packets.held


# -- the deadline ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keepalive", [0, 600])
@pytest.mark.gateway_settings(packet_timeout=1.0)
async def test_a_half_sent_publish_is_closed_at_the_packet_deadline(
    gateway: Gateway, api: httpx.AsyncClient, keepalive: int
) -> None:
    token = await make_device(api)
    raw = await _session(gateway, token, "slow", keepalive=keepalive)
    try:
        start, _rest = _half(f"kp1/v1/app/{token}/x", 100_000, 50_000)
        await raw.send(start)
        assert await raw.closed_by_peer(5.0)
    finally:
        await raw.close()
    await wait_until(lambda: _reason_is(api, "dev-1", "packet_timeout"))
    assert gateway.services.metrics.disconnects["packet_timeout"] == 1
    await wait_until(lambda: _nothing_held(gateway))


@pytest.mark.gateway_settings(packet_timeout=1.0)
async def test_a_half_sent_fixed_header_is_closed_at_the_packet_deadline(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    raw = await _session(gateway, token, "slow")
    try:
        await raw.send(b"\x32\xff")  # a PUBLISH whose remaining length goes on, and never does
        assert await raw.closed_by_peer(5.0)
    finally:
        await raw.close()
    await wait_until(lambda: _reason_is(api, "dev-1", "packet_timeout"))


@pytest.mark.gateway_settings(packet_timeout=1.0)
async def test_an_idle_session_and_a_slow_packet_within_the_deadline_are_not_closed(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """The deadline starts at a packet's first byte: silence between packets is keep-alive's business."""
    token = await make_device(api)
    raw = await _session(gateway, token, "idle")
    try:
        assert await raw.silent_for(1.5)
        whole = publish_packet(f"kp1/v1/app/{token}/x", b"s" * 40_000, packet_id=7)
        for i in range(0, len(whole), 10_000):  # 0.6 s for the packet
            await raw.send(whole[i : i + 10_000])
            await asyncio.sleep(0.15)
        assert await raw.read_packet() == ack_packet(4, 7)
    finally:
        await raw.close()


# -- the node-wide bound -----------------------------------------------------------------------------------


@pytest.mark.gateway_settings(
    max_packet_bytes=200_000, max_partial_packet_bytes=300_000, tenant_partial_packets_share=1.0, packet_timeout=30.0
)
async def test_half_sent_packets_over_the_node_bound_are_closed(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Six sessions each leave 100 KB of a 150 KB PUBLISH unfinished: three fit in the 300 KB bound,
    the other three are closed as they would exceed it. Whole packets are never held: a bystander
    goes on, and the three finish their packets once they send the rest."""
    tokens = [await make_device(api, "acme", f"d{i}") for i in range(6)]
    bystander = await make_device(api, "globex", "b1")
    sessions = [await _session(gateway, token, f"c{i}") for i, token in enumerate(tokens)]
    rests = []
    try:
        for i, (raw, token) in enumerate(zip(sessions, tokens, strict=True)):
            start, rest = _half(f"kp1/v1/app/{token}/x", 150_000, 100_000)
            rests.append(rest)
            await raw.send(start)
            if i < 3:
                await wait_until(lambda n=i: _held_is(gateway, (n + 1) * 100_000))
            else:
                assert await raw.closed_by_peer(5.0), i
        assert _held(gateway) == 300_000
        other = await _session(gateway, bystander, "bystander")
        await other.send(publish_packet(f"kp1/v1/app/{bystander}/x", b"b" * 1_000, packet_id=3))
        assert await other.read_packet() == ack_packet(4, 3)
        await other.close()
        for raw, rest in zip(sessions[:3], rests[:3], strict=True):
            await raw.send(rest)
            assert await raw.read_packet() == ack_packet(4, 1)
        assert _held(gateway) == 0
    finally:
        for raw in sessions:
            await raw.close()
    metrics = gateway.services.metrics
    assert metrics.limits_hit["max_partial_packet_bytes"] == 3
    await wait_until(lambda: _disconnects(gateway, "partial_packets_full", 3))


@pytest.mark.gateway_settings(max_packet_bytes=100_000, max_partial_packet_bytes=300_000, packet_timeout=30.0)
async def test_one_tenant_holds_at_most_its_share_of_the_bound(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Half of the 300 KB bound per tenant: acme's second half-sent packet is closed, globex's is held."""
    hog = [await make_device(api, "acme", f"a{i}") for i in range(2)]
    other = await make_device(api, "globex", "g1")
    first, second = [await _session(gateway, token, f"c{i}") for i, token in enumerate(hog)]
    third = await _session(gateway, other, "g")
    try:
        await first.send(_half(f"kp1/v1/app/{hog[0]}/x", 95_000, 90_000)[0])
        await wait_until(lambda: _held_is(gateway, 90_000))
        await second.send(_half(f"kp1/v1/app/{hog[1]}/x", 95_000, 90_000)[0])
        assert await second.closed_by_peer(5.0)
        await third.send(_half(f"kp1/v1/app/{other}/x", 95_000, 90_000)[0])
        await wait_until(lambda: _held_is(gateway, 180_000))
    finally:
        for raw in (first, second, third):
            await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_partial_packets_share"] == 1
    assert gateway.services.metrics.limits_hit["max_partial_packet_bytes"] == 0
    await wait_until(lambda: _nothing_held(gateway))


def test_the_bound_holds_a_packet_of_the_largest_size() -> None:
    from gateway.node.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="tenant_partial_packets_share must be at least max_packet_bytes"):
        load_settings(max_packet_bytes=2_000_000, max_partial_packet_bytes=3_000_000)


# -- the same over WebSocket ----------------------------------------------------------------------------------


def _ws_frame_start(length: int, mask: bytes, payload_start: bytes) -> bytes:
    """A masked binary frame declaring `length` payload bytes, with only the first of them."""
    header = b"\x82\xff" + struct.pack("!Q", length) + mask
    return header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload_start))


def _ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return _ws_frame_start(len(payload), mask, payload)


async def _ws_session(gateway: Gateway, token: str, client_id: str) -> RawClient:
    raw = await RawClient.open(gateway.ports["ws"])
    await raw.send(UPGRADE)
    response = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101"), response
    await raw.send(_ws_frame(connect_packet(client_id, token, keepalive=0)))
    assert await raw.reader.readexactly(6) == b"\x82\x04" + ACCEPTED
    return raw


@pytest.mark.gateway_settings(ws_port=0, packet_timeout=1.0)
async def test_a_half_sent_websocket_frame_is_closed_at_the_packet_deadline(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    raw = await _ws_session(gateway, token, "slow")
    try:
        await raw.send(_ws_frame_start(100_000, b"\x01\x02\x03\x04", b"\x30" + b"\x00" * 50_000))
        closing = await asyncio.wait_for(raw.reader.read(), 5)  # to EOF: a close frame, then the socket goes
        assert closing[:1] == b"\x88", closing[:10]
    finally:
        await raw.close()
    await wait_until(lambda: _reason_is(api, "dev-1", "packet_timeout"))
    await wait_until(lambda: _nothing_held(gateway))


@pytest.mark.gateway_settings(ws_port=0, packet_timeout=1.0)
async def test_a_half_sent_packet_over_whole_websocket_messages_is_closed_at_the_deadline(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    raw = await _ws_session(gateway, token, "slow")
    try:
        start, _rest = _half(f"kp1/v1/app/{token}/x", 10_000, 5_000)
        await raw.send(_ws_frame(start))
        closing = await asyncio.wait_for(raw.reader.read(), 5)  # to EOF: a close frame, then the socket goes
        assert closing[:1] == b"\x88", closing[:10]
    finally:
        await raw.close()
    await wait_until(lambda: _reason_is(api, "dev-1", "packet_timeout"))


@pytest.mark.gateway_settings(
    ws_port=0,
    max_packet_bytes=200_000,
    max_partial_packet_bytes=250_000,
    tenant_partial_packets_share=1.0,
    packet_timeout=30.0,
)
async def test_half_sent_websocket_frames_count_against_the_node_bound(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    tokens = [await make_device(api, "acme", f"d{i}") for i in range(2)]
    first = await _ws_session(gateway, tokens[0], "a")
    second = await _ws_session(gateway, tokens[1], "b")
    try:
        await first.send(_ws_frame_start(180_000, b"\x05\x06\x07\x08", b"\x30" + b"\x00" * 149_999))
        await wait_until(lambda: _held_is(gateway, 150_000))
        await second.send(_ws_frame_start(180_000, b"\x05\x06\x07\x08", b"\x30" + b"\x00" * 149_999))
        closing = await _until_closed(second)
        # a close frame 1013 (try again later); or a reset, when the socket went with our bytes unread
        assert closing is None or (closing[:1] == b"\x88" and closing[2:4] == b"\x03\xf5"), closing[:10]
        assert _held(gateway) == 150_000  # the first is still being received
    finally:
        await first.close()
        await second.close()
    assert gateway.services.metrics.limits_hit["max_partial_packet_bytes"] == 1
    await wait_until(lambda: _nothing_held(gateway))


async def _until_closed(raw: RawClient) -> bytes | None:
    """What the server sent until it closed the socket; None when it reset it."""
    try:
        return await asyncio.wait_for(raw.reader.read(), 5)
    except ConnectionResetError:
        return None


async def _reason_is(api: httpx.AsyncClient, device: str, reason: str) -> bool:
    return await _last_reason(api, device) == reason


async def _held_is(gateway: Gateway, n: int) -> bool:
    return _held(gateway) == n


async def _nothing_held(gateway: Gateway) -> bool:
    return _held(gateway) == 0


async def _disconnects(gateway: Gateway, reason: str, n: int) -> bool:
    return gateway.services.metrics.disconnects[reason] == n


@pytest.mark.gateway_settings(
    ws_port=0, max_packet_bytes=100_000, max_partial_packet_bytes=300_000, packet_timeout=30.0, connect_timeout=10.0
)
async def test_websocket_frames_before_connect_share_one_tenants_part_of_the_bound(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Sockets without a CONNECT yet are one more tenant: two anonymous half-sent frames of 90 KB do not
    both fit in half of 300 KB, and a device's frame after its CONNECT counts as its tenant's."""
    token = await make_device(api)
    device = await _ws_session(gateway, token, "d")
    anonymous = [await _upgraded(gateway) for _ in range(2)]
    try:
        await anonymous[0].send(_ws_frame_start(95_000, b"\x01\x02\x03\x04", b"\x10" + b"\x00" * 89_999))
        await wait_until(lambda: _held_is(gateway, 90_000))
        await anonymous[1].send(_ws_frame_start(95_000, b"\x01\x02\x03\x04", b"\x10" + b"\x00" * 89_999))
        closing = await _until_closed(anonymous[1])
        assert closing is None or closing[:1] == b"\x88", closing[:10]
        await device.send(_ws_frame_start(95_000, b"\x01\x02\x03\x04", b"\x30" + b"\x00" * 89_999))
        await wait_until(lambda: _held_is(gateway, 180_000))
    finally:
        for raw in (device, *anonymous):
            await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_partial_packets_share"] == 1
    await wait_until(lambda: _nothing_held(gateway))


async def _upgraded(gateway: Gateway) -> RawClient:
    raw = await RawClient.open(gateway.ports["ws"])
    await raw.send(UPGRADE)
    assert (await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
    return raw
