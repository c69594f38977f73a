"""Issue 8: one tenant's events never hold up another's (a backlog nobody consumes, a consumer that never acks)."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.services import events as dispatcher

from .conftest import make_device, mqtt, wait_until
from .test_events import collect, service_account
from .wire import RawClient, connect_packet, subscribe_packet

CONNACK_OK = b"\x20\x02\x00\x00"
DISCONNECT = b"\xe0\x00"


async def flood(gateway: Gateway, tenant: str, token: str, cycles: int) -> None:
    """`cycles` connect/disconnect cycles of one device: two events each, through the real CONNECT path."""
    for i in range(cycles):
        raw = await RawClient.open(gateway.ports["mqtt"])
        try:
            await raw.send(connect_packet(f"c{i}", token))
            assert await raw.read_packet() == CONNACK_OK
            await raw.send(DISCONNECT)
            assert await raw.closed_by_peer(2.0)
        finally:
            await raw.close()

    async def all_recorded() -> bool:
        return len(await gateway.registry.outbox.pending(tenant, limit=2 * cycles + 1)) > 2 * cycles

    await wait_until(all_recorded, timeout=10)


async def consumer(gateway: Gateway, api: httpx.AsyncClient, tenant: str) -> RawClient:
    """A service account subscribed at QoS 1 over a raw socket: it acknowledges only what the test says."""
    account = await service_account(api, tenant, "raw")
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("raw", account["username"], account["password"]))
    assert await raw.read_packet() == CONNACK_OK
    await raw.send(subscribe_packet(1, f"$gateway/events/{tenant}/#", qos=1))
    assert await raw.read_packet() == b"\x90\x03\x00\x01\x01"
    return raw


def parse_publish(packet: bytes | None) -> tuple[int, str, dict[str, Any]]:
    """(packet id, topic, JSON payload) of a QoS 1 PUBLISH read whole by RawClient.read_packet."""
    assert packet is not None and packet[0] & 0xF6 == 0x32, packet
    i = 1
    while packet[i] & 0x80:  # remaining length
        i += 1
    i += 1
    (topic_len,) = struct.unpack_from("!H", packet, i)
    topic = packet[i + 2 : i + 2 + topic_len].decode()
    (packet_id,) = struct.unpack_from("!H", packet, i + 2 + topic_len)
    return packet_id, topic, json.loads(packet[i + 4 + topic_len :])


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


async def test_a_backlog_nobody_consumes_costs_other_tenants_nothing(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Tenant `flood` has no service account and more undelivered events than the old global LIMIT 500."""
    token = await make_device(api, "flood", "d1")
    await flood(gateway, "flood", token, 310)
    account = await service_account(api, "acme")
    async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
        await svc.subscribe("$gateway/events/acme/#", qos=1)
        await make_device(api, "acme", "kettle-1")
        events = await collect(svc, 1, timeout=2.0)  # the old global ORDER BY id LIMIT 500 never got there
    assert [t for t, _ in events] == ["$gateway/events/acme/endpoint/lifecycle/registered"]
    assert events[0][1]["endpointId"] == "kettle-1"
    # still waiting, in full: registered, state-changed (its token, issue 10), 310 x connected + disconnected
    assert len(await gateway.registry.outbox.pending("flood", limit=1000)) == 622


async def test_a_consumer_that_never_acks_holds_up_only_its_own_tenant(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    account = await service_account(api, "acme")
    stuck = await consumer(gateway, api, "globex")
    try:
        async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
            await svc.subscribe("$gateway/events/acme/#", qos=1)
            await make_device(api, "globex", "g1")
            _, topic, _ = parse_publish(await stuck.read_packet())  # sent; the gateway now waits for a PUBACK
            assert topic == "$gateway/events/globex/endpoint/lifecycle/registered"
            loop = asyncio.get_running_loop()
            start = loop.time()
            await make_device(api, "acme", "kettle-1")
            events = await collect(svc, 2, timeout=2.0)  # registered, then state-changed (its token)
            took = loop.time() - start
        assert [t for t, _ in events][:1] == ["$gateway/events/acme/endpoint/lifecycle/registered"]
        assert took < 2.0 < dispatcher.DELIVERY_TIMEOUT  # typically 0.1 s; behind globex's it would be ~5 s
        # marked published once its PUBACK is read, which may be just after the consumer saw it
        await wait_until(lambda: _none_pending(gateway, "acme"))
        # not acked: still undelivered, and the device's state-changed (its token) behind it
        assert len(await gateway.registry.outbox.pending("globex")) == 2
    finally:
        await stuck.close()


async def test_an_unacked_event_is_sent_again_before_any_later_one(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At least once, in order: the tenant's next event waits until the earlier one is acknowledged."""
    monkeypatch.setattr(dispatcher, "DELIVERY_TIMEOUT", 0.3)
    stuck = await consumer(gateway, api, "acme")
    try:
        await make_device(api, "acme", "first")
        first_id, _, first = parse_publish(await stuck.read_packet())
        await make_device(api, "acme", "second")
        again_id, _, again = parse_publish(await stuck.read_packet())  # after the timeout: the same event
        assert again["correlationId"] == first["correlationId"] and again["endpointId"] == "first"
        assert again_id != first_id
        await stuck.send(puback(again_id))
        seen = []
        for _ in range(3):
            next_id, topic, event = parse_publish(await stuck.read_packet())
            seen.append((event["endpointId"], topic.removeprefix("$gateway/events/acme/")))
            await stuck.send(puback(next_id))
        assert seen == [
            ("first", "endpoint/lifecycle/state-changed"),  # first's token (issue 10), then second's events
            ("second", "endpoint/lifecycle/registered"),
            ("second", "endpoint/lifecycle/state-changed"),
        ]
        await wait_until(lambda: _none_pending(gateway, "acme"))
    finally:
        await stuck.close()


async def test_tenants_with_consumers_share_the_dispatcher(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A tenant draining a large backlog does not make another tenant's new event wait behind it."""
    token = await make_device(api, "big", "d1")
    await flood(gateway, "big", token, 310)
    big = await consumer(gateway, api, "big")
    acme = await service_account(api, "acme")
    try:
        # big's consumer acknowledges each event 10 ms after reading it: its backlog takes > 6 s to drain
        draining = asyncio.create_task(acknowledge(big, 622, delay=0.01))
        await wait_until(lambda: marked_some(gateway, "big", 622), timeout=10)
        async with mqtt(gateway, acme["username"], acme["password"], client_id="acme") as svc:
            await svc.subscribe("$gateway/events/acme/#", qos=1)
            await make_device(api, "acme", "kettle-1")
            acme_events = await collect(svc, 1, timeout=2.0)
        assert not draining.done()  # acme's event came while big's backlog was still being delivered
        big_events = await asyncio.wait_for(draining, 20)
    finally:
        await big.close()
    assert [p["endpointId"] for _, p in acme_events] == ["kettle-1"]
    expected = ["registered", "state-changed"] + ["connected", "disconnected"] * 310
    assert [t.rsplit("/", 1)[1] for t, _ in big_events] == expected
    assert len({p["correlationId"] for _, p in big_events}) == 622


async def acknowledge(raw: RawClient, count: int, *, delay: float) -> list[tuple[str, dict[str, Any]]]:
    """Reads `count` events, acknowledging each `delay` seconds after it arrived."""
    got = []
    for _ in range(count):
        packet_id, topic, payload = parse_publish(await raw.read_packet())
        got.append((topic, payload))
        await asyncio.sleep(delay)
        await raw.send(puback(packet_id))
    return got


async def marked_some(gateway: Gateway, tenant: str, total: int) -> bool:
    return len(await gateway.registry.outbox.pending(tenant, limit=total)) < total


async def _none_pending(gateway: Gateway, tenant: str) -> bool:
    return await gateway.registry.outbox.pending(tenant) == []
