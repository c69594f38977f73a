"""Issue 17 point 4: a service account cannot fill the disk through its command invocations. Each
account has an invocation rate (429 on the result topic beyond it); a refused invocation is counted
per account, status and minute, not a row each; an accepted one is one entry with bounded fields."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_json, ok
from .test_audit_bounds import registry_bytes
from .wire import RawClient, connect_packet, publish_packet

LONG_TOPIC = "$gateway/commands/acme/" + "d" * (65_535 - 40) + "/reboot"


async def service_account(api: httpx.AsyncClient, account: str = "ops") -> tuple[str, str]:
    r = await api.post("/v1/tenants", json={"id": "acme"})
    assert r.status_code in (201, 409)
    made = await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": account}), 201)
    return made["username"], made["password"]


async def flood(gateway: Gateway, username: str, password: str, topic: str, count: int) -> int:
    """`count` QoS 1 invocations, at most 50 unacknowledged; the PUBACKs received."""
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("flood", username, password))
    assert (await raw.read_packet()) == b"\x20\x02\x00\x00"
    acks = 0

    async def read_acks() -> None:
        nonlocal acks
        while acks < count:
            packet = await raw.read_packet(timeout=30)
            if packet is None:
                return
            acks += packet[0] >> 4 == 4

    reader = asyncio.create_task(read_acks())
    for i in range(count):
        await raw.send(publish_packet(topic, b'{"payload": {}}', packet_id=i % 60_000 + 1))
        while i - acks > 50 and not reader.done():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(reader, 60)
    await raw.close()
    return acks


async def refusals(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await ok(api.get("/v1/audit/refusals", params={"tenant": "acme", "limit": 1000})))["refusals"]  # type: ignore[no-any-return]


@pytest.mark.gateway_settings(commands_per_minute=1, commands_burst=100)
async def test_an_invocation_flood_with_64_kb_topics_is_counted_not_written(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """The finding: 2,503 invocations with a ~64 KB topic in 10 s were 2,503 rows, 326 MB."""
    username, password = await service_account(api)
    before = registry_bytes(gateway)
    assert await flood(gateway, username, password, LONG_TOPIC, 2500) == 2500
    await api.get("/v1/audit/refusals")  # reading writes what was counted
    grown = registry_bytes(gateway) - before
    assert [
        e for e in await gateway.registry.audit.page(tenant_id="acme", limit=1000) if e.action.startswith("MQTT")
    ] == []
    assert grown < 256 * 1024, grown
    counted = await refusals(api)
    by_status = {status: sum(r["count"] for r in counted if r["status"] == status) for status in (404, 429)}
    assert by_status == {404: 100, 429: 2400}  # the burst reached the registry (no such device), the rest not
    assert {r["source"] for r in counted} == {"service:ops@acme"} and len(counted) <= 4  # two, or a minute's split
    assert all(len(r["target"]) < 600 and r["tenant"] == "acme" for r in counted)
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["commandsRefused"]["429"] == 2400
    assert metrics["limitsHit"]["commands_per_minute"] == 2400
    assert metrics["auditCounted"] == {"mqtt": 2500}


@pytest.mark.gateway_settings(commands_per_minute=1, commands_burst=3)
async def test_the_invocation_rate_is_per_account_and_refused_on_the_result_topic(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    await make_device(api, "acme", "k1")
    username, password = await service_account(api, "ops")
    other_user, other_password = await service_account(api, "ops2")
    async with mqtt(gateway, username, password, client_id="ops") as app:
        await app.subscribe("$gateway/commands/acme/k1/reboot/result", qos=1)
        for i in range(5):
            await app.publish("$gateway/commands/acme/k1/reboot", json.dumps({"id": 100 + i, "payload": {}}), qos=1)
        answers = [await next_json(app) for _ in range(2)]
    # refused before the payload is read (a flood costs no parsing): no id, in the order published
    assert [(body["id"], body["state"], body["statusCode"]) for _topic, body in answers] == [(None, "refused", 429)] * 2
    assert "invocations a minute" in answers[0][1]["reasonPhrase"]
    async with mqtt(gateway, other_user, other_password, client_id="ops2") as other:
        await other.publish("$gateway/commands/acme/k1/reboot", b'{"payload": {}}', qos=1)
    await asyncio.sleep(0.3)
    made = await gateway.registry.audit.page(tenant_id="acme", limit=1000)
    invocations = [(e.actor, e.status) for e in made if e.action.startswith("MQTT")]
    assert invocations == [("service:ops@acme", 202)] * 3 + [("service:ops2@acme", 202)]
    assert [(r["source"], r["status"], r["count"]) for r in await refusals(api)] == [("service:ops@acme", 429, 2)]
