"""Issue 17 point 1: an outsider cannot fill the disk through the audit trail. Writes without the admin
token are counted per address, actor, status and minute (`GET /v1/audit/refusals`), not a row each;
stored fields are cut; the tables are bounded in rows; requests without the token are rate-limited
per address, refused before their body is read. And (a rough edge) a create names what it created."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.callers import admin_actor
from gateway.node.runtime import Gateway
from registry import Registry
from registry.audit import PRUNE_OLD, PRUNE_ORIGIN, PRUNE_REFUSALS, RefusalCount

from .conftest import make_device, ok

LONG = 120_000


def registry_bytes(gateway: Gateway) -> int:
    path = gateway.settings.registry_path
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


async def raw_request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"{}", local: str = ""
) -> int:
    """One HTTP/1.1 request over its own socket (httpx refuses URLs over 64 KiB); the status answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0) if local else None)
    head = {"host": "gateway", "content-type": "application/json", "content-length": str(len(body))}
    lines = "".join(f"{k}: {v}\r\n" for k, v in {**head, "connection": "close", **(headers or {})}.items())
    writer.write(f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def refusals(api: httpx.AsyncClient, **params: object) -> list[dict[str, Any]]:
    return (await ok(api.get("/v1/audit/refusals", params={"limit": 1000, **params})))["refusals"]  # type: ignore[no-any-return]


async def entries(gateway: Gateway) -> list[Any]:
    return await gateway.registry.audit.page(limit=1000)


async def test_anonymous_writes_with_huge_paths_are_counted_not_written(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """The finding: 210 anonymous PUTs with a 120,000-character path parameter were 210 rows of 120 KB."""
    before = registry_bytes(gateway)
    port = gateway.ports["api"]
    statuses = [
        await raw_request(port, "PUT", f"/v1/tenants/acme/devices/{'x' * LONG}{i}/metadata") for i in range(210)
    ]
    counted = await api.get("/v1/audit/refusals", params={"limit": 1000})  # reading writes what was counted
    grown = registry_bytes(gateway) - before
    assert await entries(gateway) == []
    assert grown < 256 * 1024, grown
    burst = gateway.settings.api_unauthenticated_burst
    assert statuses.count(401) >= burst and statuses.count(401) + statuses.count(429) == 210
    rows = counted.json()["refusals"]
    assert {(r["source"], r["actor"], r["status"]) for r in rows} <= {
        ("127.0.0.1", "anonymous", 401),
        ("127.0.0.1", "anonymous", 429),
    }
    assert sum(r["count"] for r in rows) == 210
    assert all(len(r["target"]) < 600 and r["tenant"] is None for r in rows)
    assert rows[0]["action"] == "PUT (not routed)"  # refused before routing: nothing parsed its path
    assert rows[0]["target"].startswith("/v1/tenants/acme/devices/xxx") and rows[0]["target"].endswith(" chars)")
    assert rows[0]["detail"] == "missing or wrong bearer token"


async def test_refusals_are_written_at_stop_and_logged_once_per_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from .conftest import test_settings

    caplog.set_level(logging.INFO, "gateway.audit")
    settings = test_settings(tmp_path / "data")
    gw = Gateway(settings)
    await gw.start()
    try:
        for _ in range(20):
            await raw_request(gw.ports["api"], "DELETE", "/v1/tenants/acme")
    finally:
        await gw.stop()
    lines = [r.getMessage() for r in caplog.records if "event=" in r.getMessage()]
    assert not [line for line in lines if "event=api_write" in line]
    refused = [line for line in lines if "event=writes_refused" in line]
    assert len(refused) == 1 and "count=20" in refused[0] and "source=127.0.0.1" in refused[0]
    registry = await Registry(settings.registry_path).open()
    try:
        rows = await registry.audit.refusals()
    finally:
        await registry.close()
    assert [(r.source, r.status, r.count) for r in rows] == [("127.0.0.1", 401, 20)]


@pytest.mark.gateway_settings(api_unauthenticated_burst=5, api_unauthenticated_per_minute=1)
async def test_requests_without_the_admin_token_are_rate_limited_per_address(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    base = f"http://127.0.0.1:{gateway.ports['api']}"
    async with httpx.AsyncClient(base_url=base) as anonymous:
        first = [(await anonymous.post("/v1/tenants", json={"id": "evil"})).status_code for _ in range(5)]
        over = await anonymous.get("/v1/tenants")
        wrong = await anonymous.get("/v1/tenants", headers={"Authorization": "Bearer not-the-token"})
        assert (await anonymous.get("/healthz")).status_code == 200  # open: load balancers poll it
    assert first == [401] * 5
    assert (over.status_code, wrong.status_code) == (429, 429)  # a wrong token is no token
    assert over.headers["retry-after"] == "60" and over.json()["error"] == "too_many_requests"
    assert (await api.get("/v1/tenants")).status_code == 200  # the admin, from the same address
    elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base, transport=elsewhere) as other:
        assert (await other.get("/v1/tenants")).status_code == 401  # another address has its own budget
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["apiRefused"] == {"unauthenticated": 6, "rate_limited": 2}  # reads too; 5 writes counted
    assert metrics["limitsHit"]["api_unauthenticated_per_minute"] == 2
    scrape = (await api.get("/metrics")).text
    assert 'gateway_api_refused_total{reason="rate_limited"} 2.0' in scrape
    assert 'gateway_audit_refusals_counted_total{origin="api"} 5.0' in scrape


async def test_an_anonymous_body_is_refused_before_it_is_read(gateway: Gateway) -> None:
    """A client that announces a megabyte and sends it slowly is answered at once, and its connection
    closed: the body is never read, parsed or waited for."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports["api"])
    writer.write(b"POST /v1/tenants HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\n")
    writer.write(b'content-length: 1000000\r\n\r\n{"id": "')
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    assert answer.startswith(b"HTTP/1.1 401")
    rest = await asyncio.wait_for(reader.read(), 5)  # to the end: the gateway closed the connection
    assert rest.endswith(b'"missing or wrong bearer token"}')
    writer.close()


@pytest.mark.gateway_settings(audit_refusal_sources_per_minute=10)
async def test_many_addresses_make_a_bounded_number_of_rows(gateway: Gateway, api: httpx.AsyncClient) -> None:
    port = gateway.ports["api"]
    for n in range(40):
        for _ in range(3):
            assert await raw_request(port, "POST", "/v1/tenants", local=f"127.0.0.{n + 2}") == 401
    rows = await refusals(api)
    assert sum(r["count"] for r in rows) == 120
    minutes = {r["minute"] for r in rows}
    assert len(minutes) <= 2  # the run may cross a minute: each has its own 10
    apart = [r for r in rows if r["source"] != "(other addresses)"]
    folded = [r for r in rows if r["source"] == "(other addresses)"]
    assert len(apart) <= 10 * len(minutes) and len(folded) == len(minutes)
    assert all(r["count"] == 3 for r in apart)
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["auditFolded"] == sum(r["count"] for r in folded) >= 120 - 3 * 20
    assert metrics["auditCounted"] == {"api": 120}


async def test_an_admin_write_with_a_huge_path_is_stored_cut(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.audit")
    admin = {"authorization": f"Bearer {gateway.admin_token}"}
    status = await raw_request(
        gateway.ports["api"], "PUT", f"/v1/tenants/{'t' * LONG}/devices/d/metadata", headers=admin
    )
    assert status == 404

    async def recorded() -> list[Any]:
        return await entries(gateway)

    for _ in range(100):
        if await recorded():
            break
        await asyncio.sleep(0.02)
    [entry] = await recorded()
    limit = gateway.settings.audit_max_field_chars
    assert len(entry.target) < limit + 32 and entry.target.endswith(
        f"({len('/v1/tenants//devices/d/metadata') + LONG} chars)"
    )
    assert entry.tenant_id is not None and len(entry.tenant_id) < limit + 32
    [line] = [r.getMessage() for r in caplog.records if "event=api_write" in r.getMessage()]
    assert len(line) < 3 * limit


async def test_the_tables_are_bounded_in_rows_apart_by_origin(tmp_path: Path) -> None:
    registry = await Registry(tmp_path / "r.sqlite3").open()
    pruned: dict[str, int] = {}
    registry.audit.set_bounds(
        retention_days=90, max_rows=100, max_invocation_rows=100, max_refusal_rows=100, max_field_chars=64
    )
    registry.audit.on_pruned = lambda what, rows: pruned.__setitem__(what, pruned.get(what, 0) + rows)
    try:
        for i in range(50):
            await registry.audit.record(
                actor="service:a@t", action="MQTT", tenant_id="t", target=f"m{i}", status=202, origin="mqtt"
            )
        for i in range(500):
            await registry.audit.record(
                actor="admin:x", action="POST /v1/tenants", tenant_id=None, target=f"/v1/tenants/t{i}", status=201
            )
        for i in range(500):
            await registry.audit.count_refusals(
                [RefusalCount(i * 60_000, "127.0.0.1", "anonymous", 401, 1, None, "POST", "/x" * 100, None)]
            )
        kept = await registry.audit.page(limit=1000)
        counted = await registry.audit.refusals(limit=1000)
    finally:
        await registry.close()
    api_rows = [e for e in kept if e.actor == "admin:x"]
    assert 100 <= len(api_rows) <= 110 and api_rows[-1].target == "/v1/tenants/t499"
    assert len([e for e in kept if e.actor == "service:a@t"]) == 50  # the API's volume pushed out none of them
    assert 100 <= len(counted) <= 110 and counted[-1].minute.timestamp() == 499 * 60
    assert all(len(r.target) < 64 + 20 for r in counted)
    assert pruned["api"] == 500 - len(api_rows) and pruned["refusals"] == 500 - len(counted)


async def test_the_bounds_are_kept_without_a_table_scan(tmp_path: Path) -> None:
    registry = await Registry(tmp_path / "r.sqlite3").open()
    try:
        plans = [
            await registry.db.read_all(f"EXPLAIN QUERY PLAN {sql}", args)
            for sql, args in ((PRUNE_ORIGIN, ("api", 10)), (PRUNE_REFUSALS, (10,)), (PRUNE_OLD, (0,)))
        ]
    finally:
        await registry.close()
    details = [str(r["detail"]) for plan in plans for r in plan]
    assert details and all("USING" in d or "SEARCH" in d for d in details if "audit" in d), details


async def test_a_create_names_what_it_created(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, "acme", "k1")
    await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "ops"}), 201)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "fleet"}), 201)
    command = await api.post("/v1/tenants/acme/devices/k1/commands/reboot", json={"payload": {}}, params={"wait": 0})
    await asyncio.sleep(0.2)
    creates = [(e.action, e.target) for e in await entries(gateway) if e.action.startswith("POST")]
    assert creates[:5] == [
        ("POST /v1/tenants", "/v1/tenants/acme"),
        ("POST /v1/tenants/{tenant}/devices", "/v1/tenants/acme/devices/k1"),
        ("POST /v1/tenants/{tenant}/devices/{device}/tokens", creates[2][1]),
        ("POST /v1/tenants/{tenant}/service-accounts", "/v1/tenants/acme/service-accounts/ops"),
        ("POST /v1/tenants/{tenant}/groups", "/v1/tenants/acme/groups/fleet"),
    ]
    assert creates[2][1].startswith("/v1/tenants/acme/devices/k1/tokens/[sha256:") and token not in creates[2][1]
    if command.status_code == 202:
        assert creates[5] == (
            "POST /v1/tenants/{tenant}/devices/{device}/commands/{command_type}",
            f"/v1/tenants/acme/devices/k1/commands/reboot/{command.json()['id']}",
        )
    assert admin_actor(gateway.admin_token) == (await entries(gateway))[0].actor
    assert json.dumps([e.target for e in await entries(gateway)]).count(token) == 0


async def test_the_cli_shows_the_counts_per_address_and_minute(gateway: Gateway) -> None:
    from .test_cli import cli

    port = gateway.ports["api"]
    for _ in range(4):
        await raw_request(port, "POST", "/v1/tenants", local="127.0.0.7")
    shown = await cli(gateway, "audit", "--refusals")
    assert shown.returncode == 0, shown.stderr
    [row] = [line for line in shown.stdout.splitlines() if "127.0.0.7" in line]
    assert "anonymous" in row and " 401 " in f" {row} " and " 4 " in f" {row} "
    as_json = await cli(gateway, "audit", "--refusals", "--json")
    [counted] = json.loads(as_json.stdout)["refusals"]
    assert (counted["source"], counted["status"], counted["count"]) == ("127.0.0.7", 401, 4)


async def test_huge_wrong_tokens_are_counted_and_never_stored(gateway: Gateway, api: httpx.AsyncClient) -> None:
    before = registry_bytes(gateway)
    huge = {"authorization": "Bearer " + "a" * 90_000}  # beyond ~128 KB of head uvicorn resets the socket
    statuses = [await raw_request(gateway.ports["api"], "POST", "/v1/tenants", headers=huge) for _ in range(50)]
    rows = await refusals(api)
    assert set(statuses) <= {401, 429} and registry_bytes(gateway) - before < 64 * 1024
    assert {r["actor"] for r in rows} == {"anonymous (wrong token)"} and sum(r["count"] for r in rows) == 50
    assert "aaaa" not in json.dumps(rows)


async def test_an_upgraded_registry_cuts_what_an_attack_left(tmp_path: Path) -> None:
    """A registry at schema 11 holding the finding's rows: migration 0014 cuts them and sorts them by origin."""
    import sqlite3

    from registry.database import _migrations

    path = tmp_path / "r.sqlite3"
    with sqlite3.connect(path) as db:
        for version, sql in _migrations():
            if version <= 11:
                db.executescript(sql)
        db.execute("PRAGMA user_version = 11")
        huge = "/v1/tenants/acme/devices/" + "x" * LONG
        db.execute(
            "INSERT INTO audit_log (at, actor, action, tenant_id, target, status)"
            " VALUES (1, 'anonymous', 'PUT', ?, ?, 401)",
            ("t" * LONG, huge),
        )
        db.execute(
            "INSERT INTO audit_log (at, actor, action, target, status)"
            " VALUES (2, 's', 'MQTT $gateway/commands/x', 'x', 404)"
        )
    registry = await Registry(path).open()
    try:
        rows = await registry.db.read_all("SELECT origin, length(target) AS t, length(tenant_id) AS n FROM audit_log")
    finally:
        await registry.close()
    assert [(r["origin"], r["t"] < 600, r["n"]) for r in rows] == [("api", True, 128), ("mqtt", True, None)]
