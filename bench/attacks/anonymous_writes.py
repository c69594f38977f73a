"""Anonymous writes against the management API: PUTs with a 120,000-character path parameter and no
token, from 20 loopback addresses, 8 at a time (issue 17 point 1). What they leave in the registry,
and another tenant's 10/EPMP round trips meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import httpx

from . import Outcome
from .bystander import Bystander
from .registry_growth import audit_rows, mb, registry_bytes

NAME = "anonymous writes"
WHAT = "PUTs without a token, a 120,000-char path parameter, 20 addresses"
PARAMETER = "x" * 120_000
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 22)]


async def _put(port: int, local: str, n: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    path = f"/v1/tenants/bench/devices/{PARAMETER}{n}/metadata"
    writer.write(
        f"PUT {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        "content-length: 2\r\nconnection: close\r\n\r\n{}".encode()
    )
    try:
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
        return int(answer.split(b" ", 2)[1]) if answer else 0
    except (ConnectionError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def run(server: Any, quick: bool) -> Outcome:
    total = 210 if quick else 2_000
    port = server.info["api"]
    before = registry_bytes(server)
    statuses: Counter[int] = Counter()
    queue = list(range(total))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            statuses[await _put(port, ADDRESSES[n % len(ADDRESSES)], n)] += 1

    cpu, started = server.cpu_seconds(), time.perf_counter()
    async with Bystander(server) as watch:
        await asyncio.gather(*(worker() for _ in range(8)))
        seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    admin = {"Authorization": f"Bearer {server.info['admin']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=admin) as api:
        await api.get("/v1/audit/refusals")  # where it exists, this writes what was counted
    await asyncio.sleep(3.0)  # rows written after the responses
    entries, counted = audit_rows(server)
    answered = ", ".join(f"{n} x {status or 'reset'}" for status, n in sorted(statuses.items()))
    growth = mb(registry_bytes(server) - before)
    effect = (
        f"{growth} registry, {entries} audit rows, {counted} counted ({answered}); {seconds:.1f} s, {cpu:.1f} s CPU"
    )
    return Outcome(effect, watch.result)
