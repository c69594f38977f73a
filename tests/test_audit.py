"""Issue 11 point 2: the audit trail (log line + row at GET /v1/audit), JSON logs, bursts logged once."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import httpx
import pytest

from gateway.api.callers import admin_actor
from gateway.node.runtime import Gateway
from gateway.ops.audit import BurstLog

from .conftest import api_client, make_device, mqtt, ok, served_gateway, wait_until
from .pki_helpers import make_ca, make_device_cert
from .test_x509 import ACCEPTED, add_ca, tls_connack


async def _entries(api: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    return (await ok(api.get("/v1/audit", params=params)))["entries"]  # type: ignore[no-any-return]


async def test_every_api_write_is_recorded_with_who_what_target_outcome(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.audit")
    token = await make_device(api, "acme", "k1")  # tenant, device, token: three writes
    await ok(api.get("/v1/tenants/acme/devices/k1"))  # a read: not recorded
    assert (await api.post("/v1/tenants", json={"id": "acme"})).status_code == 409
    await ok(api.delete(f"/v1/tenants/acme/devices/k1/tokens/{token}"), 204)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}") as anonymous:
        assert (await anonymous.post("/v1/tenants", json={"id": "evil"})).status_code == 401
    async with api_client(gateway, "not-the-token") as wrong:
        assert (await wrong.delete("/v1/tenants/acme")).status_code == 401

    async def all_recorded() -> bool:  # rows are written once the response is out
        return len(await _entries(api)) == 5

    await wait_until(all_recorded)
    entries = await _entries(api)
    admin = admin_actor(gateway.admin_token)
    assert [(e["actor"], e["action"], e["target"], e["status"]) for e in entries] == [
        (admin, "POST /v1/tenants", "/v1/tenants/acme", 201),  # a create names what it created
        (admin, "POST /v1/tenants/{tenant}/devices", "/v1/tenants/acme/devices/k1", 201),
        (admin, "POST /v1/tenants/{tenant}/devices/{device}/tokens", entries[2]["target"], 201),
        (admin, "POST /v1/tenants", "/v1/tenants", 409),
        (admin, "DELETE /v1/tenants/{tenant}/devices/{device}/tokens/{token}", entries[4]["target"], 204),
    ]
    assert entries[2]["target"] == entries[4]["target"]  # the token's hint, both times
    assert token not in json.dumps(entries) and "[sha256:" in str(entries[4]["target"])  # never the token
    assert gateway.admin_token not in json.dumps(entries)
    assert entries[3]["detail"] and "already exists" in str(entries[3]["detail"])
    assert entries[1]["tenant"] == "acme" and entries[0]["tenant"] is None
    refused = (await ok(api.get("/v1/audit/refusals")))["refusals"]  # not a row each: counted per minute
    assert [(r["source"], r["actor"], r["action"], r["target"], r["status"], r["count"]) for r in refused] == [
        ("127.0.0.1", "anonymous", "POST (not routed)", "/v1/tenants", 401, 1),
        ("127.0.0.1", "anonymous (wrong token)", "DELETE (not routed)", "/v1/tenants/acme", 401, 1),
    ]
    lines = [r.getMessage() for r in caplog.records if "event=api_write" in r.getMessage()]
    assert len(lines) == 5 and all(token not in line for line in lines)
    assert "status=409" in lines[3] and f"actor={admin}" in lines[3]


async def test_audit_pages_and_filters_by_tenant(gateway: Gateway, api: httpx.AsyncClient) -> None:
    for tenant in ("a", "b"):
        await ok(api.post("/v1/tenants", json={"id": tenant}), 201)
        for i in range(3):
            await ok(api.post(f"/v1/tenants/{tenant}/devices", json={"id": f"d{i}"}), 201)

    async def recorded() -> bool:
        return len(await _entries(api)) == 8

    await wait_until(recorded)
    only_b = await _entries(api, tenant="b")
    assert [(e["target"], e["tenant"]) for e in only_b] == [(f"/v1/tenants/b/devices/d{i}", "b") for i in range(3)]
    first = await ok(api.get("/v1/audit", params={"limit": 5}))
    rest = await ok(api.get("/v1/audit", params={"limit": 5, "after": first["next"]}))
    assert len(first["entries"]) == 5 and len(rest["entries"]) == 3 and rest["next"] is None
    assert (await api.get("/v1/audit", params={"limit": 0})).status_code == 422
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}") as anonymous:
        assert (await anonymous.get("/v1/audit")).status_code == 401


async def test_an_applications_command_invocation_is_recorded(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "k1")
    account = await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "ops"}), 201)
    async with mqtt(gateway, account["username"], account["password"], client_id="ops") as app:
        await app.publish("$gateway/commands/acme/k1/reboot", b'{"payload": {}}', qos=1)
        await app.publish("$gateway/commands/acme/ghost/reboot", b'{"payload": {}}', qos=1)

        async def recorded() -> bool:
            refused = (await ok(api.get("/v1/audit/refusals", params={"tenant": "acme"})))["refusals"]
            return len(refused) == 1

        await wait_until(recorded)
    mqtt_entries = [e for e in await _entries(api, tenant="acme") if e["actor"] == "service:ops@acme"]
    assert [(e["target"], e["status"]) for e in mqtt_entries] == [("$gateway/commands/acme/k1/reboot", 202)]
    [refused] = (await ok(api.get("/v1/audit/refusals", params={"tenant": "acme"})))["refusals"]
    assert (refused["source"], refused["target"], refused["status"], refused["count"]) == (
        "service:ops@acme",
        "$gateway/commands/acme/ghost/reboot",
        404,
        1,
    )
    assert refused["detail"] and "ghost" in refused["detail"]


async def test_bursts_log_their_first_event_and_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.audit")
    burst = BurstLog("thing_happened", window=0.2, max_keys=2)
    for i in range(100):
        burst.note("k1", n=i)
    burst.note("k2", n=0)
    for i in range(50):
        burst.note(f"many-{i}", n=i)  # over max_keys: one more key for all of them
    await asyncio.sleep(0.4)
    burst.note("k1", n=100)  # a new burst
    caplog_records = [r.getMessage() for r in caplog.records]
    assert caplog_records[:3] == ["event=thing_happened n=0", "event=thing_happened n=0", "event=thing_happened n=0"]
    summaries = sorted(r for r in caplog_records if "_burst" in r)
    assert summaries == [
        'event=thing_happened_burst key="(others)" count=49 seconds=0.2',
        "event=thing_happened_burst key=k1 count=99 seconds=0.2",
    ]
    assert caplog_records[-1] == "event=thing_happened n=100"


async def test_auto_provisioning_and_dropped_requests_are_logged(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.audit")
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True, appVersion="v1")
    for name in ("kettle-1", "kettle-2", "kettle-3"):
        assert await tls_connack(gateway, make_device_cert(tmp_path, ca, name)) == ACCEPTED
    lines = [r.getMessage() for r in caplog.records if "event=device_auto_provisioned" in r.getMessage()]
    assert lines == [lines[0]] and "tenant=acme device=kettle-1" in lines[0]  # once per burst, not never


@pytest.mark.gateway_settings(epmp_max_pending=1)
async def test_a_request_flood_is_logged_once(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.audit")
    token = await make_device(api, "acme", "k1")
    async with mqtt(gateway, token, client_id="k1") as device:
        for i in range(200):
            await device.publish(f"kp1/v1/epmx/{token}/update/keys/{i}", b'{"n": 1}', qos=0)

        async def dropped() -> bool:
            return any("event=requests_dropped" in r.getMessage() for r in caplog.records)

        await wait_until(dropped)
    lines = [r.getMessage() for r in caplog.records if "event=requests_dropped" in r.getMessage()]
    assert len(lines) == 1 and "tenant=acme device=k1 limit=epmp_max_pending" in lines[0]


async def test_json_logs_and_any_case_level(tmp_path: Path) -> None:
    """`log_format = "json"`: every line of the real process is a JSON object; audit fields are keys."""
    data_dir = tmp_path / "data"
    async with served_gateway(data_dir, "json-node", GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="info") as served:
        async with served.api() as api:
            await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)

            async def recorded() -> bool:
                return len(await _entries(api)) == 1

            await wait_until(recorded)
        served.proc.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(served.proc.communicate, None, 20)
    text = err.decode()
    not_json = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert not not_json, text[-2000:]
    assert (data_dir / "admin-token").read_text().strip() not in text  # a shipped log never holds it
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    write = next(line for line in lines if line.get("event") == "api_write")
    assert (write["action"], write["status"], write["level"]) == ("POST /v1/tenants", 201, "INFO")
