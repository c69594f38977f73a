"""Security issue, items 5 and 7: no ghost sessions, no leaked connection slots, fair admission."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import api_client, connection, make_device, ok, test_settings, wait_until
from .wire import RawClient, connack, connect_packet

ACCEPTED = b"\x20\x02\x00\x00"
SERVER_UNAVAILABLE = b"\x20\x02\x00\x03"


async def _connect_then_reset(port: int, packet: bytes) -> None:
    """Sends CONNECT and resets the socket at once (SO_LINGER 0: an RST, not a FIN)."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _broker(gateway: Gateway):  # type: ignore[no-untyped-def]
    assert gateway.broker is not None
    return gateway.broker


@pytest.fixture
async def small_gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(test_settings(tmp_path / "data", max_connections=3))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


# -- 5. CONNECT then reset ------------------------------------------------------------------------------


async def test_connect_then_reset_leaves_no_ghost_and_no_slot(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    await asyncio.gather(
        *(_connect_then_reset(gateway.ports["mqtt"], connect_packet(f"ghost-{i}", token)) for i in range(200))
    )

    async def settled() -> bool:
        status = await connection(api, "acme", "dev-1")
        return _broker(gateway).open_sockets == 0 and status["sessions"] == 0 and not _broker(gateway).sessions

    await wait_until(settled, timeout=10)
    status = await connection(api, "acme", "dev-1")
    assert status["connected"] is False
    assert all(e["event"] == "disconnected" for e in status["log"][:1])
    # a real client still gets in, and stays
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("real", token))
        assert await raw.read_packet() == ACCEPTED
        assert (await connection(api, "acme", "dev-1"))["sessions"] == 1
    finally:
        await raw.close()


async def test_reset_sockets_do_not_lock_out_a_small_gateway(small_gateway: Gateway) -> None:
    async with api_client(small_gateway) as api:
        token = await make_device(api)
        for i in range(3):
            await _connect_then_reset(small_gateway.ports["mqtt"], connect_packet(f"g{i}", token))
        await wait_until(lambda: _no_sockets(small_gateway), timeout=5)
        assert await connack(small_gateway.ports["mqtt"], connect_packet("real", token)) == ACCEPTED


async def _no_sockets(gateway: Gateway) -> bool:
    return _broker(gateway).open_sockets == 0


# -- 7. admission --------------------------------------------------------------------------------------


@pytest.fixture
async def limited(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    gw = Gateway(test_settings(tmp_path / "data", **{"connect_timeout": 5.0, **request.param}))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def _open_from(port: int, source: str) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return RawClient(reader, writer)


@pytest.mark.parametrize("limited", [{"max_connections": 3}], indirect=True)
async def test_tls_sockets_count_before_their_handshake(limited: Gateway) -> None:
    """Sockets that never start TLS hold slots: the limit is reached by them, not exceeded."""
    silent = [await RawClient.open(limited.ports["mqtts"]) for _ in range(3)]
    try:
        await wait_until(lambda: _sockets_are(limited, 3))
        extra_tls = await RawClient.open(limited.ports["mqtts"])
        extra_plain = await RawClient.open(limited.ports["mqtt"])
        assert await extra_tls.closed_by_peer(1.0) and await extra_plain.closed_by_peer(1.0)
        assert limited.services.metrics.connects_refused["max_connections"] == 2
    finally:
        for raw in silent:
            await raw.close()
    await wait_until(lambda: _sockets_are(limited, 0))


@pytest.mark.parametrize("limited", [{"max_pending_connects_per_address": 2}], indirect=True)
async def test_sockets_without_connect_are_capped_per_source_address(limited: Gateway) -> None:
    port = limited.ports["mqtt"]
    async with api_client(limited) as api:
        token = await make_device(api)
    silent = [await _open_from(port, "127.0.0.1") for _ in range(2)]
    try:
        await wait_until(lambda: _sockets_are(limited, 2))
        third = await _open_from(port, "127.0.0.1")
        assert await third.closed_by_peer(1.0)
        other = await _open_from(port, "127.0.0.2")  # another address is not affected
        await other.send(connect_packet("other", token))
        assert await other.read_packet() == ACCEPTED
        # a socket that completes CONNECT frees its address's pending slot
        await silent[0].send(connect_packet("first", token))
        assert await silent[0].read_packet() == ACCEPTED
        fourth = await _open_from(port, "127.0.0.1")
        await fourth.send(connect_packet("fourth", token))
        assert await fourth.read_packet() == ACCEPTED
        assert limited.services.metrics.limits_hit["max_pending_connects_per_address"] == 1
        for raw in (third, other, fourth):
            await raw.close()
    finally:
        for raw in silent:
            await raw.close()


@pytest.mark.parametrize("limited", [{"max_sessions_per_device": 2}], indirect=True)
async def test_sessions_per_device_are_capped(limited: Gateway) -> None:
    port = limited.ports["mqtt"]
    async with api_client(limited) as api:
        token = await make_device(api)
        bystander = await make_device(api, "acme", "dev-2")
        held = []
        for client_id in ("a", "b"):
            raw = await RawClient.open(port)
            await raw.send(connect_packet(client_id, token, keepalive=0))  # keep-alive 0 counts too
            assert await raw.read_packet() == ACCEPTED
            held.append(raw)
        try:
            assert await connack(port, connect_packet("c", token)) == SERVER_UNAVAILABLE
            assert await connack(port, connect_packet("c", bystander)) == ACCEPTED  # another device
            # a takeover of one of its own client ids is not a new session
            again = await RawClient.open(port)
            await again.send(connect_packet("a", token))
            assert await again.read_packet() == ACCEPTED
            assert await held[0].closed_by_peer(2.0)
            await again.close()
            await wait_until(lambda: _device_sessions(api, "dev-1", 1))
            assert await connack(port, connect_packet("c", token)) == ACCEPTED
        finally:
            for raw in held:
                await raw.close()
        assert limited.services.metrics.limits_hit["max_sessions_per_device"] == 1


@pytest.mark.parametrize("limited", [{"max_sessions_per_device": 2}], indirect=True)
async def test_an_offline_persistent_session_gives_way_to_a_new_connection(limited: Gateway) -> None:
    port = limited.ports["mqtt"]
    async with api_client(limited) as api:
        token = await make_device(api)
    for client_id in ("kept-1", "kept-2"):  # two persistent sessions, both offline now
        raw = await RawClient.open(port)
        await raw.send(connect_packet(client_id, token, clean=False))
        assert await raw.read_packet() == ACCEPTED
        await raw.send(b"\xe0\x00")
        assert await raw.closed_by_peer(2.0)
        await raw.close()
    assert await connack(port, connect_packet("new", token)) == ACCEPTED
    # the oldest kept session was dropped to make room; the newer one is still there
    assert await connack(port, connect_packet("kept-2", token, clean=False)) == b"\x20\x02\x01\x00"
    assert await connack(port, connect_packet("kept-1", token, clean=False)) == ACCEPTED  # session present 0


async def test_tenant_connection_cap(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme", "maxConnections": 2}), 201)
    tokens = [await make_device(api, "acme", f"d{i}") for i in range(3)]
    other = await make_device(api, "globex", "g1")
    port = gateway.ports["mqtt"]
    held = []
    for i in range(2):
        raw = await RawClient.open(port)
        await raw.send(connect_packet(f"c{i}", tokens[i]))
        assert await raw.read_packet() == ACCEPTED
        held.append(raw)
    assert await connack(port, connect_packet("c2", tokens[2])) == SERVER_UNAVAILABLE
    assert await connack(port, connect_packet("g", other)) == ACCEPTED
    await held.pop().close()
    await wait_until(lambda: _device_sessions(api, "d1", 0))
    assert await connack(port, connect_packet("c2", tokens[2])) == ACCEPTED
    await ok(api.patch("/v1/tenants/acme", json={"maxConnections": None}))
    assert (await ok(api.get("/v1/tenants/acme")))["maxConnections"] is None
    for raw in held:
        await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_max_connections"] == 1


async def test_keepalive_zero_sessions_get_tcp_keepalive(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """With keep-alive 0 MQTT never times a session out: TCP keep-alive probes reap a dead peer."""
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("zero", token, keepalive=0))
        assert await raw.read_packet() == ACCEPTED
        live = next(iter(_broker(gateway).table.live.values()))
        sock = live.connection.writer.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
    finally:
        await raw.close()


async def _sockets_are(gateway: Gateway, n: int) -> bool:
    return _broker(gateway).open_sockets == n


async def _device_sessions(api: httpx.AsyncClient, device: str, n: int) -> bool:
    return (await connection(api, "acme", device))["sessions"] == n


@pytest.mark.parametrize("limited", [{"max_sessions_per_device": 2}], indirect=True)
async def test_one_shot_clients_in_a_row_are_not_refused_by_the_session_cap(limited: Gateway) -> None:
    """mosquitto_pub in a loop: each CONNECT arrives while the previous client's DISCONNECT is still being
    handled. A session that is ending does not count against the cap; the new one waits for it."""
    port = limited.ports["mqtt"]
    async with api_client(limited) as api:
        token = await make_device(api)
    held = await RawClient.open(port)
    await held.send(connect_packet("listener", token))
    assert await held.read_packet() == ACCEPTED
    try:
        for i in range(10):
            raw = await RawClient.open(port)
            await raw.send(connect_packet(f"once-{i}", token) + b"\xe0\x00")
            assert await raw.read_packet() == ACCEPTED, i
            await raw.close()
    finally:
        await held.close()
    assert limited.services.metrics.limits_hit["max_sessions_per_device"] == 0


async def test_a_refused_connect_evicts_nothing(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """The tenant cap is checked before an offline persistent session is dropped to make room."""
    await ok(api.post("/v1/tenants", json={"id": "acme", "maxConnections": 1}), 201)
    token = await make_device(api, "acme", "d1")
    other = await make_device(api, "acme", "d2")
    port = gateway.ports["mqtt"]
    for client_id in ("kept-1", "kept-2", "kept-3", "kept-4"):  # d1 at its device cap, all offline
        raw = await RawClient.open(port)
        await raw.send(connect_packet(client_id, token, clean=False))
        assert await raw.read_packet() == ACCEPTED
        await raw.send(b"\xe0\x00")
        assert await raw.closed_by_peer(2.0)
        await raw.close()
    await wait_until(lambda: _device_sessions(api, "d1", 0))
    holder = await RawClient.open(port)
    await holder.send(connect_packet("h", other))
    assert await holder.read_packet() == ACCEPTED  # the tenant is at its cap now
    try:
        assert await connack(port, connect_packet("new", token)) == SERVER_UNAVAILABLE
    finally:
        await holder.close()
    await wait_until(lambda: _device_sessions(api, "d2", 0))
    assert await connack(port, connect_packet("kept-1", token, clean=False)) == b"\x20\x02\x01\x00"


@pytest.mark.parametrize("limited", [{"connect_timeout": 2.0}], indirect=True)
async def test_tls_handshake_and_connect_share_one_deadline(limited: Gateway) -> None:
    """connect_timeout covers the TLS handshake and the CONNECT together (each had a full one)."""
    assert limited.tls is not None
    context = ssl.create_default_context(cafile=str(limited.tls.ca_path))
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.ports["mqtts"])
    accepted = loop.time()
    await asyncio.sleep(1.5)  # the attack: a slow ClientHello, just inside the deadline
    await writer.start_tls(context, server_hostname="localhost")
    raw = RawClient(reader, writer)
    try:
        assert await raw.closed_by_peer(3.0)  # and then no CONNECT at all
        assert loop.time() - accepted < 2.9  # closed at the one 2 s deadline, not 1.5 s + 2 s
    finally:
        await raw.close()
    assert limited.services.metrics.connects_refused["connect_timeout"] == 1
