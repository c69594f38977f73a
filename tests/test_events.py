"""Issue 4 point 6: lifecycle, connectivity and metadata events through the outbox to service accounts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import (
    make_device,
    mqtt,
    ok,
    outbox_events,
    restarted_gateway,
    served_gateway,
    wait_until,
)
from .wire import RawClient, connect_packet, granted

EVENTS = "$gateway/events/acme/#"


async def service_account(api: httpx.AsyncClient, tenant: str = "acme", name: str = "analytics") -> dict[str, str]:
    r = await api.post("/v1/tenants", json={"id": tenant})
    assert r.status_code in (201, 409)
    return await ok(api.post(f"/v1/tenants/{tenant}/service-accounts", json={"id": name}), 201)  # type: ignore[no-any-return]


async def collect(client: aiomqtt.Client, count: int, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    async def gather() -> None:
        async for message in client.messages:
            got.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]
            if len(got) == count:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gather(), timeout)
    return got


async def test_service_account_sees_its_tenants_events_in_order(gateway: Gateway, api: httpx.AsyncClient) -> None:
    account = await service_account(api)
    assert account["username"] == "analytics@acme" and len(account["password"]) >= 22
    async with mqtt(gateway, account["username"], account["password"], client_id="svc") as svc:
        await svc.subscribe(EVENTS, qos=1)
        token = await make_device(api, "acme", "kettle-1", app_version="v1")
        async with mqtt(gateway, token, client_id="k1") as device:
            await device.publish(f"kp1/v1/epmx/{token}/update/keys/1", b'{"temp": 90}', qos=1)
            await device.publish(f"kp1/v2/epmx/{token}/get/keys/2", b"", qos=1)  # a new app version

            async def both_answered() -> bool:  # committed before the device disconnects
                subjects = {e["subject"] for e in await outbox_events(gateway, "acme")}
                return {"endpoint/metadata/updated", "endpoint/lifecycle/appversion-updated"} <= subjects

            await wait_until(both_answered, timeout=10)
        await ok(api.delete("/v1/tenants/acme/devices/kettle-1"), 204)
        events = await collect(svc, 8, timeout=10)
    subjects = [t.removeprefix("$gateway/events/acme/") for t, _ in events]
    assert subjects == [
        "endpoint/lifecycle/registered",
        "endpoint/lifecycle/state-changed",  # enrolled -> registered: its first token (issue 10)
        "endpoint/connectivity/connected",
        "endpoint/metadata/updated",
        "endpoint/lifecycle/appversion-updated",
        "endpoint/connectivity/disconnected",
        "endpoint/lifecycle/state-changed",  # -> deleted
        "endpoint/lifecycle/unregistered",
    ]
    assert [(events[i][1]["previousState"], events[i][1]["state"]) for i in (1, 6)] == [
        ("enrolled", "registered"),
        ("registered", "deleted"),
    ]
    del events[6], events[1]
    payloads = [p for _, p in events]
    for p in payloads:
        assert {"correlationId", "timestamp", "originatorReplicaId"} <= set(p) and p[
            "originatorReplicaId"
        ] == "test-node"
    assert len({p["correlationId"] for p in payloads}) == 6
    assert payloads[1]["endpoints"] == {"kettle-1": "v1"}
    assert payloads[2]["added"] == {"temp": "90"} and payloads[2]["endpointId"] == "kettle-1"
    assert payloads[3]["previousAppVersionName"] == "v1" and payloads[3]["appVersionName"] == "v2"
    assert payloads[4]["endpoints"] == {"kettle-1": "v2"} and payloads[4]["reason"] == "client_disconnect"


async def test_service_account_access_rules(gateway: Gateway, api: httpx.AsyncClient) -> None:
    account = await service_account(api)
    await service_account(api, "globex", "other")
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("svc", account["username"], account["password"]))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        cases = {
            EVENTS: True,
            "$gateway/events/acme/endpoint/connectivity/#": True,
            "$gateway/events/globex/#": False,
            "$gateway/events/+/#": False,
            "$gateway/#": False,
            "#": False,
            "kp1/+/+/+/#": False,
        }
        assert await granted(raw, list(cases)) == list(cases.values())
    finally:
        await raw.close()


async def test_other_tenants_events_are_invisible(gateway: Gateway, api: httpx.AsyncClient) -> None:
    acme = await service_account(api)
    globex = await service_account(api, "globex", "g")
    async with (
        mqtt(gateway, acme["username"], acme["password"], client_id="a") as acme_svc,
        mqtt(gateway, globex["username"], globex["password"], client_id="g") as globex_svc,
    ):
        await acme_svc.subscribe(EVENTS, qos=1)
        await globex_svc.subscribe("$gateway/events/globex/#", qos=1)
        await make_device(api, "acme", "acme-dev")
        assert len(await collect(acme_svc, 1)) == 1  # delivered: had it leaked, globex would have it by now
        await make_device(api, "globex", "globex-dev")
        events = await collect(globex_svc, 1)  # globex's own event is the first thing globex sees
    assert [(t, p["endpointId"]) for t, p in events] == [
        ("$gateway/events/globex/endpoint/lifecycle/registered", "globex-dev")
    ]


async def test_username_collisions_between_devices_and_service_accounts(api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "d1")
    await ok(api.put("/v1/tenants/acme/devices/d1/passwords/shared", json={"password": "x"}))
    r = await api.post("/v1/tenants/acme/service-accounts", json={"id": "shared"})
    assert r.status_code == 409
    await service_account(api, "acme", "svc")
    r = await api.put("/v1/tenants/acme/devices/d1/passwords/svc", json={"password": "y"})
    assert r.status_code == 409


async def test_deleting_a_service_account_closes_its_session(gateway: Gateway, api: httpx.AsyncClient) -> None:
    account = await service_account(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("svc", account["username"], account["password"]))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await ok(api.delete("/v1/tenants/acme/service-accounts/analytics"), 204)
        assert await raw.closed_by_peer(1.0)
    finally:
        await raw.close()
    with pytest.raises(aiomqtt.MqttCodeError):
        async with mqtt(gateway, account["username"], account["password"]):
            pass


async def test_events_survive_kill_9(tmp_path: Path) -> None:
    """Committed events not yet delivered when the gateway dies are delivered after the restart."""
    data_dir = tmp_path / "data"
    async with served_gateway(data_dir, "crashy") as served, served.api() as api:
        account = await service_account(api)
        token = await make_device(api, "acme", "kettle-1", app_version="v1")
        raw = await RawClient.open(served.ports["mqtt"])
        await raw.send(connect_packet("k", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        # no consumer yet: registered + connected are committed but undelivered
        await served.kill_9()
        await raw.close()
    async with restarted_gateway(data_dir, "crashy") as gw:
        async with mqtt(gw, account["username"], account["password"], client_id="svc") as svc:
            await svc.subscribe(EVENTS, qos=1)
            events = await collect(svc, 4)
        assert [t.rsplit("/", 1)[1] for t, _ in events] == ["registered", "state-changed", "connected", "disconnected"]
        assert events[3][1]["reason"] == "gateway_restart"

        async def all_marked() -> bool:  # marked after the consumer's PUBACKs
            return await gw.registry.outbox.pending("acme") == []

        await wait_until(all_marked)


async def test_every_event_has_one_correlation_id_format(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Events made in Python (registered) and by the registry's SQL triggers (connected, disconnected)
    carry correlationId in one format: 32 lowercase hex digits."""
    token = await make_device(api)
    async with mqtt(gateway, token):
        pass
    await wait_until(lambda: _has(gateway, "disconnected"))
    events = await outbox_events(gateway, "acme")
    subjects = {e["subject"].rsplit("/", 1)[-1] for e in events}
    assert {"registered", "connected", "disconnected"} <= subjects, subjects
    ids = [e["payload"]["correlationId"] for e in events]
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids), ids
    assert len(set(ids)) == len(ids)


async def _has(gateway: Gateway, suffix: str) -> bool:
    return any(e["subject"].endswith(suffix) for e in await outbox_events(gateway, "acme"))
