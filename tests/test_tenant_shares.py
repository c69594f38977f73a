"""Issue 17 points 6 and 7: one tenant's use of a node-wide budget never takes another tenant's share
(retained messages in count and bytes, sockets)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from gateway.mqtt.table import SESSION_CAP_GRACE
from gateway.node.runtime import Gateway

from .conftest import make_device, ok
from .wire import RawClient, ack_packet, connect_packet, publish_fields, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"
SERVER_UNAVAILABLE = b"\x20\x02\x00\x03"


async def _client(gateway: Gateway, token: str, client_id: str) -> RawClient:
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet(client_id, token))
    assert await raw.read_packet() == ACCEPTED
    return raw


async def _retain(gateway: Gateway, token: str, topic: str, payload: bytes) -> None:
    """One retained QoS 1 PUBLISH from its own connection: PUBACKed whether it is kept or not."""
    raw = await _client(gateway, token, "pub")
    try:
        await raw.send(publish_packet(topic, payload, retain=True, packet_id=1))
        assert await raw.read_packet() == ack_packet(4, 1)
    finally:
        await raw.close()


async def _replayed(gateway: Gateway, token: str, topic_filter: str) -> set[tuple[str, bytes]]:
    """The retained messages a new subscription to `topic_filter` gets."""
    raw = await _client(gateway, token, "sub")
    try:
        await raw.send(subscribe_packet(1, topic_filter))
        assert (await raw.read_packet() or b"")[0] == 0x90
        got = set()
        while (message := await _next(raw)) is not None:
            _qos, topic, _id, payload = publish_fields(message)
            got.add((topic, payload))
        return got
    finally:
        await raw.close()


async def _next(raw: RawClient) -> bytes | None:
    try:
        return await raw.read_packet(timeout=0.3)
    except TimeoutError:
        return None


def _retained(gateway: Gateway) -> int:
    assert gateway.broker is not None
    return len(gateway.broker.router.retained)


# -- 6. retained messages ----------------------------------------------------------------------------------


@pytest.mark.gateway_settings(max_retained_bytes=40_000, max_retained_bytes_per_device=10_000)
async def test_a_tenant_that_fills_its_retained_bytes_leaves_another_tenants_kept(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Tenant A's devices keep at most half the node's retained bytes: tenant B's message is kept."""
    hog = [await make_device(api, "acme", f"a{i}") for i in range(4)]
    victim = await make_device(api, "globex", "b1")
    for token in hog:  # ~9 KB each: 36 KB of the node's 40 KB before the fix
        await _retain(gateway, token, f"kp1/v1/app/{token}/state", b"a" * 9_000)
    assert _retained(gateway) == 2  # A's share is 20 KB
    await _retain(gateway, victim, f"kp1/v1/app/{victim}/state", b"b" * 9_000)
    assert _retained(gateway) == 3
    assert await _replayed(gateway, victim, f"kp1/v1/app/{victim}/#") == {(f"kp1/v1/app/{victim}/state", b"b" * 9_000)}
    limits = gateway.services.metrics.limits_hit
    assert limits["tenant_retained_share"] == 2
    assert limits["max_retained_bytes"] == 0


@pytest.mark.gateway_settings(max_retained_messages=8)
async def test_a_tenant_that_fills_its_retained_count_leaves_another_tenants_kept(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    hog = await make_device(api, "acme", "a1")
    victim = await make_device(api, "globex", "b1")
    for i in range(8):  # all 8 of the node's messages before the fix
        await _retain(gateway, hog, f"kp1/v1/app/{hog}/r{i}", b"x")
    assert _retained(gateway) == 4
    await _retain(gateway, victim, f"kp1/v1/app/{victim}/r0", b"y")
    assert await _replayed(gateway, victim, f"kp1/v1/app/{victim}/#") == {(f"kp1/v1/app/{victim}/r0", b"y")}
    assert gateway.services.metrics.limits_hit["tenant_retained_share"] == 4


@pytest.mark.gateway_settings(max_retained_messages=4)
async def test_a_deleted_devices_retained_messages_give_its_tenant_room_again(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    first = await make_device(api, "acme", "a1")
    for i in range(2):  # the tenant's share: 2 of 4
        await _retain(gateway, first, f"kp1/v1/app/{first}/r{i}", b"x")
    second = await make_device(api, "acme", "a2")
    await _retain(gateway, second, f"kp1/v1/app/{second}/r0", b"x")
    assert _retained(gateway) == 2
    await ok(api.delete("/v1/tenants/acme/devices/a1"), 204)
    assert _retained(gateway) == 0
    await _retain(gateway, second, f"kp1/v1/app/{second}/r0", b"x")
    assert _retained(gateway) == 1


async def test_a_tenant_has_retained_limits_of_its_own(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """`maxRetainedMessages` and `maxRetainedBytes` override the tenant's share of the node's budget."""
    created = await ok(api.post("/v1/tenants", json={"id": "acme", "maxRetainedMessages": 2}), 201)
    assert created["maxRetainedMessages"] == 2 and created["maxRetainedBytes"] is None
    token = await make_device(api, "acme", "a1")
    for i in range(3):
        await _retain(gateway, token, f"kp1/v1/app/{token}/r{i}", b"x")
    assert _retained(gateway) == 2
    patched = await ok(api.patch("/v1/tenants/acme", json={"maxRetainedMessages": None, "maxRetainedBytes": 100}))
    assert patched["maxRetainedMessages"] is None and patched["maxRetainedBytes"] == 100
    await _retain(gateway, token, f"kp1/v1/app/{token}/r2", b"x" * 100)  # over 100 bytes with its topic
    await _retain(gateway, token, f"kp1/v1/app/{token}/r1", b"")  # clearing always works
    assert _retained(gateway) == 1
    limits = gateway.services.metrics.limits_hit
    assert limits["tenant_max_retained_messages"] == 1
    assert limits["tenant_max_retained_bytes"] == 1
    r = await api.patch("/v1/tenants/acme", json={"maxRetainedBytes": -1})
    assert r.status_code == 422


# -- 7. sockets ----------------------------------------------------------------------------------------------


async def _connack(port: int, token: str, client_id: str) -> tuple[bytes | None, RawClient]:
    raw = await RawClient.open(port)
    try:
        await raw.send(connect_packet(client_id, token, keepalive=0))
        return await raw.read_packet(), raw
    except ConnectionError:
        return None, raw


@pytest.mark.gateway_settings(max_connections=10)
async def test_one_tenants_flood_of_sessions_leaves_another_tenants_device_connected(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """With max_connections at 10, tenant A holds at most 5 sessions (its default share); the rest of
    its CONNECTs get CONNACK 3, and tenant B's device still gets CONNACK 0. The refusals are one log
    line for the burst, not one each (a refused fleet reconnects in a loop)."""
    caplog.set_level(logging.INFO, "gateway.audit")
    hog = [await make_device(api, "acme", f"a{i}") for i in range(10)]
    victim = await make_device(api, "globex", "b1")
    port = gateway.ports["mqtt"]
    answers = await asyncio.gather(*(_connack(port, token, f"c{i}") for i, token in enumerate(hog)))
    try:
        replies = [reply for reply, _raw in answers]
        assert replies.count(ACCEPTED) == 5
        assert replies.count(SERVER_UNAVAILABLE) == 5
        reply, raw = await _connack(port, victim, "victim")
        await raw.close()
        assert reply == ACCEPTED
    finally:
        for _reply, raw in answers:
            await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_connections_share"] == 5
    refused = [r.getMessage() for r in caplog.records if "event=connect_refused" in r.getMessage()]
    assert len(refused) == 1 and "reason=tenant_connections_share tenant=acme" in refused[0], refused


@pytest.mark.gateway_settings(max_connections=10)
async def test_a_tenants_own_max_connections_overrides_its_share(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme", "maxConnections": 7}), 201)
    hog = [await make_device(api, "acme", f"a{i}") for i in range(8)]
    answers = await asyncio.gather(*(_connack(gateway.ports["mqtt"], token, f"c{i}") for i, token in enumerate(hog)))
    try:
        assert [reply for reply, _raw in answers].count(ACCEPTED) == 7
    finally:
        for _reply, raw in answers:
            await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_max_connections"] == 1


@pytest.mark.gateway_settings(max_connections=40)
async def test_connects_over_a_tenants_share_do_not_queue_up_holding_sockets(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """At its cap, a few of a tenant's CONNECTs may wait the 1 s grace for a session to end; the others
    are refused at once, so a tenant's reconnect loop cannot hold the headroom left to other tenants."""
    from gateway.mqtt.table import MAX_WAITING_AT_TENANT_CAP  # new with the fix: the other tests run before it

    held = [await make_device(api, "acme", f"a{i}") for i in range(20)]
    extra = [await make_device(api, "acme", f"x{i}") for i in range(20)]
    port = gateway.ports["mqtt"]
    holders = await asyncio.gather(*(_connack(port, token, "h") for token in held))
    try:
        assert [reply for reply, _raw in holders].count(ACCEPTED) == 20
        tries = await asyncio.gather(*(_timed_connack(port, token) for token in extra))
        assert [reply for reply, _waited in tries].count(SERVER_UNAVAILABLE) == 20
        waited = sum(1 for _reply, seconds in tries if seconds >= SESSION_CAP_GRACE)
        assert 1 <= waited <= MAX_WAITING_AT_TENANT_CAP
    finally:
        for _reply, raw in holders:
            await raw.close()
    assert gateway.services.metrics.limits_hit["tenant_connections_share"] == 20


async def _timed_connack(port: int, token: str) -> tuple[bytes | None, float]:
    """The CONNACK and the seconds it took: a refusal that waited the grace took at least that long."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    reply, raw = await _connack(port, token, "x")
    await raw.close()
    return reply, loop.time() - start
