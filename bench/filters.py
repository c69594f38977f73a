"""Workload 12 (issue 10 point 6): endpoint filters over a fleet.

    python -m bench.filters [--fleet 100000] [--filters 10] [--changes 200]

On a gateway whose tenant has FLEET devices: how long a filter's first evaluation over the fleet
takes; then, with FILTERS active filters, how long after a device changes (an API PATCH of its
attributes) its `endpoint/matched` event reaches the tenant's application over MQTT, which is the
incremental path; and the CONNECT latency of a device of that tenant without filters and with them
(every CONNECT and DISCONNECT leaves a note that the evaluator works through). bench.run includes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from typing import Any

import aiomqtt
import httpx
from rich.console import Console
from rich.table import Table

from .imports import connect_latencies, percentile
from .server_process import Server

TENANT = "bench"


async def _until_active(api: httpx.AsyncClient, filter_id: str) -> float:
    start = time.monotonic()
    while (await api.get(f"/v1/tenants/{TENANT}/endpoint-filters/{filter_id}")).json()["state"] != "active":
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _drain(app: aiomqtt.Client, quiet: float = 1.0) -> None:
    """Reads the tenant's older events until none comes for `quiet` seconds."""
    with contextlib.suppress(TimeoutError):
        while True:
            await asyncio.wait_for(anext(aiter(app.messages)), quiet)


async def filter_workload(info: dict[str, Any], fleet: int, filters: int, changes: int) -> dict[str, float]:
    token = info["tokens"][0]
    out: dict[str, float] = {}
    stop_at = time.monotonic() + 2.0
    without = await connect_latencies(info["mqtt"], token, lambda: time.monotonic() < stop_at)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{info['api']}", headers={"Authorization": f"Bearer {info['admin']}"}, timeout=120
    ) as api:
        base = f"/v1/tenants/{TENANT}/endpoint-filters"
        r = await api.post(base, json={"id": "lab", "query": {"attr.site": "lab"}})
        r.raise_for_status()
        out["scan_s"] = await _until_active(api, "lab")
        shapes: list[dict[str, Any]] = [
            {"connected": True},
            {"appVersion": {"$in": ["v1", "v2"]}, "metadata.city": "Kyiv"},
            {"$or": [{"group": "lab"}, {"state": "provisioned"}]},
            {"attr.site": {"$exists": False}, "enabled": True},
        ]
        for i in range(filters - 1):
            (await api.post(base, json={"id": f"other{i}", "query": shapes[i % len(shapes)]})).raise_for_status()
        for i in range(filters - 1):
            await _until_active(api, f"other{i}")
        stop_at = time.monotonic() + 2.0
        with_filters = await connect_latencies(info["mqtt"], token, lambda: time.monotonic() < stop_at)
        latencies = []
        async with aiomqtt.Client(
            "127.0.0.1", info["mqtt"], username=info["app_user"], password=info["app_password"]
        ) as app:
            await app.subscribe(f"$gateway/events/{TENANT}/#", qos=1)
            await _drain(app)
            for i in range(min(changes, fleet)):
                device = f"f{i}"
                start = time.monotonic()
                (
                    await api.patch(f"/v1/tenants/{TENANT}/devices/{device}", json={"attributes": {"site": "lab"}})
                ).raise_for_status()
                async for message in app.messages:
                    body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if str(message.topic).endswith("/endpoint/matched") and body["endpointId"] == device:
                        break
                latencies.append((time.monotonic() - start) * 1000)
        (await api.put(f"{base}/lab", json={"query": {"attr.site": "lab"}})).raise_for_status()
        out["rescan_s"] = await _until_active(api, "lab")
        for filter_id in ["lab", *(f"other{i}" for i in range(filters - 1))]:  # later workloads run without
            (await api.delete(f"{base}/{filter_id}")).raise_for_status()
    out |= {
        "change_p50_ms": statistics.median(latencies),
        "change_p99_ms": percentile(latencies, 0.99),
        "connect_p50_without": statistics.median(without),
        "connect_p99_without": percentile(without, 0.99),
        "connect_p50_with": statistics.median(with_filters),
        "connect_p99_with": percentile(with_filters, 0.99),
    }
    return out


def _pair(r: dict[str, float], key: str, digits: int) -> str:
    return f"{r[key.format(50)]:.{digits}f} / {r[key.format(99)]:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", type=int, default=100_000)
    parser.add_argument("--filters", type=int, default=10)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    server = Server("gateway", args.fleet)
    try:
        r = asyncio.run(filter_workload(server.info, args.fleet, args.filters, args.changes))
    finally:
        server.close()
    table = Table(title=f"endpoint filters: {args.fleet:,} devices, {args.filters} filters, {args.changes} changes")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("first evaluation of a filter over the fleet (s)", f"{r['scan_s']:.2f}"),
        ("the same filter re-evaluated after PUT (s)", f"{r['rescan_s']:.2f}"),
        ("device change -> endpoint/matched at the app, p50 / p99 (ms)", _pair(r, "change_p{}_ms", 0)),
        ("CONNECT p50 / p99 without filters (ms)", _pair(r, "connect_p{}_without", 1)),
        (f"CONNECT p50 / p99 with {args.filters} filters (ms)", _pair(r, "connect_p{}_with", 1)),
    ]
    for row in rows:
        table.add_row(*row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
