"""Issue 17 point 2: one device cannot fill the disk through events. 10/EPMP writes have a rate per
device; a tenant's outbox is bounded in bytes (coalescing over half the bound, dropping the oldest at
it, counted); one event is bounded in size; delivered events are pruned within minutes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.ui import views

from .conftest import make_device, mqtt, ok, outbox_events, wait_until
from .pki_helpers import device_tls, make_ca, make_device_cert, trust
from .test_events import collect, service_account
from .test_prometheus import scrape, value
from .wire import RawClient, connect_packet, publish_fields, publish_packet, subscribe_packet

BOUND = 65_536
SMALL = {"event_backlog_max_bytes": BOUND, "event_max_bytes": 4096}
ROW_OVERHEAD = 128  # what an event costs beyond its payload, as docs/epmp.md counts it
UNLIMITED_WRITES = {"epmp_writes_per_second": 100_000, "epmp_write_burst": 100_000}


async def write_metadata(gateway: Gateway, token: str, payloads: list[dict[str, Any]], *, wave: int = 50) -> list[Any]:
    """Sends `payloads` as 10/EPMP update/keys requests of one device, `wave` at a time (within the
    pending limit), each answered before the next wave; returns each answer: "ok" or the error body.
    Request ids start at 1 (0 is none)."""
    raw = await RawClient.open(gateway.ports["mqtt"])
    base = f"kp1/v1/epmx/{token}/update/keys"
    answers: list[Any] = [None] * len(payloads)
    try:
        await raw.send(connect_packet(f"writer-{token}", token) + subscribe_packet(1, f"{base}/#"))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        assert (await raw.read_packet() or b"")[0] == 0x90
        for start in range(0, len(payloads), wave):
            batch = range(start, min(start + wave, len(payloads)))
            await raw.send(b"".join(publish_packet(f"{base}/{i + 1}", json.dumps(payloads[i]).encode()) for i in batch))
            for _ in batch:
                reply = await raw.read_packet(timeout=10)
                assert reply is not None
                _, topic, _, body = publish_fields(reply)
                request_id, outcome = topic.removeprefix(base + "/").split("/")
                answers[int(request_id) - 1] = "ok" if outcome == "status" else json.loads(body)
    finally:
        await raw.close()
    return answers


async def reconnect(gateway: Gateway, token: str, cycles: int) -> None:
    """`cycles` connect/disconnect cycles of one device, each recorded before the next."""
    for i in range(cycles):
        raw = await RawClient.open(gateway.ports["mqtt"])
        try:
            await raw.send(connect_packet(f"c{i}", token))
            assert await raw.read_packet() == b"\x20\x02\x00\x00"
            await raw.send(b"\xe0\x00")  # DISCONNECT
            assert await raw.closed_by_peer(2.0)
        finally:
            await raw.close()


async def outbox_bytes(gateway: Gateway, tenant: str) -> int:
    """The tenant's outbox as the bound counts it, from its rows (not from the gateway's own tally)."""
    events = await gateway.registry.outbox.of_tenant(tenant)
    return (
        sum(len(json.dumps(e.payload, separators=(",", ":"), ensure_ascii=False).encode()) for e in events)
        + len(events) * ROW_OVERHEAD
    )


def replay(events: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """A consumer's view of one device's metadata, built from its metadata/updated events alone."""
    state: dict[str, str] = {}
    for topic, event in events:
        if topic.endswith("/endpoint/metadata/updated"):
            state |= event["added"] | {k: v["newValue"] for k, v in event["updated"].items()}
            for key in event["removed"]:
                state.pop(key, None)
    return state


async def test_a_burst_of_metadata_writes_from_one_device_gets_429_over_its_rate(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Defaults: 10 writes a second after a burst of 100. 2,000 in a burst: most are refused."""
    token = await make_device(api, "acme", "noisy")
    loop = asyncio.get_running_loop()
    start = loop.time()
    answers = await write_metadata(gateway, token, [{"n": i} for i in range(2000)])
    took = loop.time() - start
    accepted = answers.count("ok")
    assert 100 <= accepted <= 100 + 10 * took + 1, (accepted, took)
    refused = [a for a in answers if a != "ok"]
    assert len(refused) == 2000 - accepted
    assert set(map(json.dumps, refused)) == {
        json.dumps({"statusCode": 429, "reasonPhrase": "metadata write rate limit reached; slow down"})
    }
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["limitsHit"]["epmp_writes_per_second"] == len(refused)
    # what was refused changed nothing: one metadata/updated event per accepted write
    assert len(await outbox_events(gateway, "acme", "endpoint/metadata/updated")) == accepted
    # the rate is the device's own: another device of the tenant still writes
    other = await make_device(api, "acme", "quiet")
    assert await write_metadata(gateway, other, [{"n": 1}]) == ["ok"]


@pytest.mark.gateway_settings(**SMALL, **UNLIMITED_WRITES)
async def test_coalesced_metadata_events_keep_the_newest_values_and_count_the_rest(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """400 writes of ~1.5 KB values (about 1.3 MB of events) in a 64 KiB bound: the outbox stays
    within it, and a consumer replaying the events that are left ends with the device's metadata."""
    account = await service_account(api)
    token = await make_device(api, "acme", "kettle")
    writes = [{"v": f"{i:04d}" + "x" * 1500} for i in range(400)]
    writes[150]["once"] = "set in the middle only"  # its only mention is in a coalesced event
    writes[300]["gone"] = 1
    writes[301]["gone"] = 2
    peak = 0
    for start in range(0, 400, 50):
        assert set(await write_metadata(gateway, token, writes[start : start + 50])) == {"ok"}
        peak = max(peak, await outbox_bytes(gateway, "acme"))
    assert peak <= BOUND
    await ok(api.delete("/v1/tenants/acme/devices/kettle/metadata", params={"keys": "gone"}))
    assert not await outbox_events(gateway, "acme", "events/dropped")
    async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
        await svc.subscribe("$gateway/events/acme/#", qos=1)
        events = await collect(svc, 10_000, timeout=3)  # all there is
        assert await gateway.registry.outbox.pending("acme") == []
    updates = [e for t, e in events if t.endswith("/metadata/updated")]
    assert len(updates) < 20 and sum(1 + e.get("coalesced", 0) for e in updates) == 401
    stored = await gateway.registry.metadata.get("acme", "kettle")
    assert replay(events) == {k: json.dumps(v, separators=(",", ":")) for k, v in stored.items()}
    assert json.loads(replay(events)["v"]).startswith("0399")
    samples = await scrape(api)
    assert value(samples, "gateway_events_coalesced_total", tenant="acme") == sum(
        e.get("coalesced", 0) for _, e in events
    )


@pytest.mark.gateway_settings(**SMALL)
async def test_a_device_reconnecting_in_a_loop_keeps_its_first_and_newest_connectivity_events(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api, "acme", "flappy")
    await reconnect(gateway, token, 300)  # 600 events, ~200 KB

    async def within_bound() -> bool:
        return await outbox_bytes(gateway, "acme") <= BOUND

    async def all_recorded() -> bool:
        kept = await gateway.registry.outbox.of_tenant("acme")
        return sum(1 + e.coalesced for e in kept if e.subject.endswith("/disconnected")) == 300

    await wait_until(within_bound, timeout=5)
    await wait_until(all_recorded, timeout=10)
    assert await within_bound()
    events = await outbox_events(gateway, "acme")
    kept = [e for e in (await gateway.registry.outbox.of_tenant("acme")) if "connectivity" in e.subject]
    assert [e.subject.rsplit("/", 1)[1] for e in kept][-2:] == ["connected", "disconnected"]
    assert sum(1 + e.coalesced for e in kept if e.subject.endswith("/connected")) == 300
    assert sum(1 + e.coalesced for e in kept if e.subject.endswith("/disconnected")) == 300
    assert not [e for e in events if e["subject"] == "events/dropped"]


@pytest.mark.gateway_settings(**SMALL)
async def test_over_the_bound_the_oldest_events_are_dropped_and_counted(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """400 devices' `registered` events have nothing to fold: the oldest go, and one events/dropped
    event says how many; the newest are kept; another tenant loses nothing."""
    await make_device(api, "globex", "bystander-1")
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    for i in range(400):
        await gateway.registry.devices.create("acme", f"d{i:03d}", node="test-node")
    await make_device(api, "globex", "bystander-2")
    assert await outbox_bytes(gateway, "acme") <= BOUND
    kept = await gateway.registry.outbox.of_tenant("acme")
    markers = [e for e in kept if e.subject == "events/dropped"]
    assert len(markers) == 1
    registered = [e.payload["endpointId"] for e in kept if e.subject == "endpoint/lifecycle/registered"]
    assert markers[0].payload["dropped"] + len(registered) == 400
    assert markers[0].payload["subjects"] == {"endpoint/lifecycle/registered": markers[0].payload["dropped"]}
    assert registered == [f"d{i:03d}" for i in range(400 - len(registered), 400)]  # the newest
    globex = await gateway.registry.outbox.of_tenant("globex")
    assert Counter(e.payload.get("endpointId") for e in globex) == {"bystander-1": 2, "bystander-2": 2}
    assert all(e.coalesced == 0 for e in globex)
    samples = await scrape(api)
    assert value(samples, "gateway_events_dropped_total", tenant="acme") == markers[0].payload["dropped"]
    assert value(samples, "gateway_events_dropped_total", tenant="globex") == 0
    assert value(samples, "gateway_event_outbox_bytes", tenant="acme") <= BOUND


@pytest.mark.gateway_settings(**SMALL, **UNLIMITED_WRITES)
async def test_another_tenants_events_are_never_coalesced_or_dropped(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, "flood", "d1")
    victim = await make_device(api, "acme", "kettle")
    await write_metadata(gateway, victim, [{"n": i} for i in range(5)])
    await write_metadata(gateway, token, [{"v": f"{i}" + "x" * 1500} for i in range(300)])
    await reconnect(gateway, token, 100)
    for i in range(400):
        await gateway.registry.devices.create("flood", f"new-{i}", node="test-node")
    await write_metadata(gateway, victim, [{"n": i} for i in range(5, 10)])

    async def flood_within_bound() -> bool:
        return await outbox_bytes(gateway, "flood") <= BOUND

    await wait_until(flood_within_bound, timeout=5)
    assert await outbox_events(gateway, "flood", "events/dropped")  # it lost its oldest; acme nothing:
    acme = await gateway.registry.outbox.of_tenant("acme")
    assert Counter(e.subject.rsplit("/", 1)[1] for e in acme) == {
        "registered": 1,
        "state-changed": 1,
        "connected": 2,
        "updated": 10,
        "disconnected": 2,
    }
    assert all(e.coalesced == 0 for e in acme)


@pytest.mark.gateway_settings(event_delivered_retention_seconds=0.5)
async def test_delivered_events_are_pruned_soon_after_delivery(gateway: Gateway, api: httpx.AsyncClient) -> None:
    account = await service_account(api)
    async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
        await svc.subscribe("$gateway/events/acme/#", qos=1)
        await make_device(api, "acme", "kettle-1")
        await make_device(api, "globex", "unconsumed")  # no service account: its events wait
        assert len(await collect(svc, 2)) == 2

        async def acme_pruned() -> bool:
            return await outbox_events(gateway, "acme") == []

        await wait_until(acme_pruned, timeout=5)
    assert len(await outbox_events(gateway, "globex")) == 2  # undelivered: kept (by age, 168 h)


@pytest.mark.gateway_settings(event_max_bytes=4096)
async def test_an_event_over_its_size_limit_leaves_out_its_values(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "big")
    url = "/v1/tenants/acme/devices/big/metadata"
    await ok(api.put(url, json={"small": 1, "large": "x" * 10_000}))
    await ok(api.put(url, json={"small": 2, "large": "y" * 10_000}))
    events = await outbox_events(gateway, "acme", "endpoint/metadata/updated")
    sizes = [len(json.dumps(e["payload"], separators=(",", ":")).encode()) for e in events]
    assert all(size <= 4096 for size in sizes), sizes
    assert events[0]["payload"]["added"] == {"small": None, "large": None}
    assert events[1]["payload"]["updated"] == {
        "small": {"oldValue": None, "newValue": None},
        "large": {"oldValue": None, "newValue": None},
    }
    assert all(e["payload"]["omitted"] == ["values"] for e in events)
    assert events[1]["payload"]["endpointId"] == "big"


@pytest.mark.gateway_settings(event_delivered_retention_seconds=0.5)
async def test_the_dashboard_lists_auto_provisioned_devices_after_their_events_are_pruned(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The last hour's auto-provisioned devices come from their histories, not from events that a
    connected consumer has had and that are pruned soon after."""
    account = await service_account(api)
    ca = make_ca(tmp_path, "Acme CA")
    await ok(trust(api, "acme", ca, autoProvisioningEnabled=True), 201)
    async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
        await svc.subscribe("$gateway/events/acme/#", qos=1)
        device = make_device_cert(tmp_path, ca, "k-7")
        async with aiomqtt.Client("localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, device)):
            pass
        assert len(await collect(svc, 3)) == 3  # registered, connected, disconnected

        async def pruned() -> bool:
            return await outbox_events(gateway, "acme") == []

        await wait_until(pruned, timeout=5)
    acme = await views.tenant_view(gateway, "acme", views.DeviceFilters())
    assert [p.device_id for p in acme.provisioned] == ["k-7"] and acme.provisioned_count == 1


@pytest.mark.gateway_settings(**SMALL)
async def test_an_import_larger_than_the_bound_keeps_its_newest_events_and_counts_the_rest(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """2,000 rows with tokens write 4,000 events in its transactions; the tenant stays within its bound."""
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    csv = "deviceId,group,appVersion,credential\n" + "".join(f"i{n:04d},,v1,token:generate\n" for n in range(2000))
    accepted = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)

    async def done() -> bool:
        job = await ok(api.get(f"/v1/tenants/acme/device-imports/{accepted['jobId']}"))
        return job["state"] not in ("queued", "running")

    await wait_until(done, timeout=60)
    assert await outbox_bytes(gateway, "acme") <= BOUND
    kept = await gateway.registry.outbox.of_tenant("acme")
    (marker,) = [e for e in kept if e.subject == "events/dropped"]
    assert marker.payload["dropped"] + len(kept) - 1 == 4000
    assert kept[-1].payload["endpointId"] == "i1999"  # the newest stays


@pytest.mark.gateway_settings(**SMALL)
async def test_an_event_changed_while_it_was_sent_is_not_marked_published(gateway: Gateway) -> None:
    """events/dropped is changed in place: a delivery of its older text leaves it undelivered."""
    registry = gateway.registry
    await registry.tenants.create("acme")
    for i in range(400):
        await registry.devices.create("acme", f"a{i:03d}", node="test-node")
    sent = await registry.outbox.pending("acme", limit=1000)  # what a delivery task read
    (marker,) = [e for e in sent if e.subject == "events/dropped"]
    for i in range(100):  # more are dropped meanwhile: the marker grows
        await registry.devices.create("acme", f"b{i:03d}", node="test-node")
    await registry.outbox.mark_published(sent)  # all of them acknowledged, as they were sent
    (waiting,) = [e for e in await registry.outbox.pending("acme", limit=1000) if e.subject == "events/dropped"]
    assert waiting.id == marker.id and waiting.payload["dropped"] > marker.payload["dropped"]
    assert waiting.payload["correlationId"] != marker.payload["correlationId"]
