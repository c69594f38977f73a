"""Workload 10 (issue 10): a CSV import of token rows, and what it does to device CONNECTs meanwhile.

    python -m bench.imports [--rows 100000]

Uploads N rows (`token:generate`) to a gateway's `POST .../device-imports` and, while the job runs,
one client CONNECTs and DISCONNECTs in a loop: the CONNECT latency during the import is compared
with the same loop before it (same process, same gateway). bench.run includes it for the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from tests.wire import RawClient, connect_packet

from .server_process import Server


async def _connect_ms(port: int, token: str, i: int) -> float:
    start = time.perf_counter()
    raw = await RawClient.open(port)
    await raw.send(connect_packet(f"lat{i}", token))
    reply = await raw.read_packet(timeout=30)
    took = (time.perf_counter() - start) * 1000
    await raw.send(b"\xe0\x00")
    await raw.close()
    if reply != b"\x20\x02\x00\x00":
        raise OSError(f"CONNECT refused: {reply!r}")
    return took


async def connect_latencies(port: int, token: str, keep_going: Callable[[], bool]) -> list[float]:
    """CONNECT+DISCONNECT in a loop, 10 ms apart, while `keep_going()`."""
    out: list[float] = []
    while keep_going():
        out.append(await _connect_ms(port, token, len(out)))
        await asyncio.sleep(0.01)
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def import_workload(info: dict[str, Any], rows: int, tenant: str = "bench") -> dict[str, float]:
    """rows/s of the import, and CONNECT latency (ms, p50 and p99) before and during it."""
    token = info["tokens"][0]
    stop_at = time.monotonic() + 2.0
    before = await connect_latencies(info["mqtt"], token, lambda: time.monotonic() < stop_at)
    csv = "deviceId,credential\n" + "".join(f"imp-{i:07d},token:generate\n" for i in range(rows))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{info['api']}", headers={"Authorization": f"Bearer {info['admin']}"}, timeout=120
    ) as api:
        start = time.monotonic()
        r = await api.post(f"/v1/tenants/{tenant}/device-imports", content=csv.encode())
        r.raise_for_status()
        path = f"/v1/tenants/{tenant}/device-imports/{r.json()['jobId']}"
        done = asyncio.Event()
        during_task = asyncio.create_task(connect_latencies(info["mqtt"], token, lambda: not done.is_set()))
        while True:
            job = (await api.get(path, params={"errors": 0})).json()
            if job["state"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.2)
        took = time.monotonic() - start
        done.set()
        during = await during_task
    if job["state"] != "succeeded" or job["created"] != rows:
        raise OSError(f"import ended {job['state']} with {job['created']} of {rows} created: {job.get('message')}")
    return {
        "rows_per_s": rows / took,
        "seconds": took,
        "p50_before": statistics.median(before),
        "p99_before": percentile(before, 0.99),
        "p50_during": statistics.median(during) if during else 0.0,
        "p99_during": percentile(during, 0.99),
        "connects_during": float(len(during)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    server = Server("gateway", 0)
    try:
        result = asyncio.run(import_workload(server.info, args.rows))
    finally:
        server.close()
    table = Table(title=f"CSV import of {args.rows:,} token rows, and CONNECT latency meanwhile")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("import time (s)", f"{result['seconds']:.1f}")
    table.add_row("rows /s", f"{result['rows_per_s']:,.0f}")
    table.add_row("CONNECT p50 / p99 before (ms)", f"{result['p50_before']:.1f} / {result['p99_before']:.1f}")
    table.add_row("CONNECT p50 / p99 during (ms)", f"{result['p50_during']:.1f} / {result['p99_during']:.1f}")
    table.add_row("CONNECTs during the import", f"{result['connects_during']:.0f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
