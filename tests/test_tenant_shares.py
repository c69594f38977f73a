"""Issue 17 point 6: one tenant's use of a node-wide budget never takes another tenant's share
(retained messages in count and bytes)."""

from __future__ import annotations

import httpx
import pytest

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
