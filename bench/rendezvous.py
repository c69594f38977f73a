"""The rendezvous view at fleet size: `python -m bench.rendezvous [--devices 100000] [--connected 20000]`.

Imports the devices (one transaction), connects a share of them through the same registry call the
broker uses on CONNECT, then times the two questions a rendezvous service asks: "which devices of
tenant T are connected now" (a 1,000-device page) and "when was device D last connected".
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from registry import Registry


async def _timed(run: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def main(devices: int, connected: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reg = await Registry(Path(tmp) / "r.sqlite3").open()
        try:
            await reg.tenants.create("big")
            await reg.tenants.create("other")
            ids = [f"dev-{i:06d}" for i in range(devices)]
            t0 = time.perf_counter()
            await reg.devices.import_devices("big", ids, app_version="v1", with_tokens=True)
            await reg.devices.import_devices("other", [f"o-{i}" for i in range(devices // 10)])
            imported = time.perf_counter() - t0
            t0 = time.perf_counter()
            for device_id in ids[:: max(1, devices // connected)][:connected]:
                record = await reg.credentials.find_tenant_token("big", device_id)
                assert record is not None
                await reg.connections.record_connect(
                    session_key=f"big/{device_id}/c",
                    tenant_id="big",
                    device_id=device_id,
                    node="n1",
                    client_id="c",
                    remote_address="127.0.0.1",
                    credential_id=record.credential_id,
                    credential_version=record.version,
                )
            connecting = time.perf_counter() - t0
            middle = ids[devices // 2]
            rows = [
                (
                    "connected now: first page of 1,000",
                    await _timed(lambda: reg.connections.connected_devices("big", limit=1000), repeat),
                ),
                (
                    "connected now: page of 1,000 from the middle",
                    await _timed(lambda: reg.connections.connected_devices("big", after=middle, limit=1000), repeat),
                ),
                (
                    "last connected: one device",
                    await _timed(lambda: reg.connections.status("big", middle, log_entries=0), repeat),
                ),
            ]
            page = await reg.connections.connected_devices("big", limit=1000)
            assert len(page) == 1000
        finally:
            await reg.close()
    table = Table(title=f"rendezvous view: {devices:,} devices, {connected:,} connected (registry on SQLite)")
    for col in ("query", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "query" else "right")
    for name, (median, p95) in rows:
        table.add_row(name, f"{median:.2f}", f"{p95:.2f}")
    Console(width=120).print(table)
    print(
        f"setup: import {devices:,} devices {imported:.1f} s; {connected:,} connects {connecting:.1f} s "
        f"({connected / connecting:,.0f}/s through record_connect)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--connected", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.connected, args.repeat))
