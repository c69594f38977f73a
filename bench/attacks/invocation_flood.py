"""A service account floods command invocations with ~64 KB topics (a device id no device has), QoS 1,
50 unacknowledged at a time (issue 17 point 4). What they leave in the registry, and another
tenant's 10/EPMP round trips meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.wire import RawClient, connect_packet, publish_packet

from . import Outcome
from .bystander import Bystander
from .registry_growth import audit_rows, mb, registry_bytes

NAME = "invocation flood"
WHAT = "a service account publishes invocations with a 64 KB topic"
TOPIC = "$gateway/commands/bench/" + "d" * (65_535 - 40) + "/reboot"


async def _flood(server: Any, count: int) -> int:
    raw = await RawClient.open(server.info["mqtt"])
    await raw.send(connect_packet("flood", server.info["app_user"], server.info["app_password"]))
    assert await raw.read_packet(timeout=30) == b"\x20\x02\x00\x00"
    acks = 0

    async def read_acks() -> None:
        nonlocal acks
        while acks < count:
            packet = await raw.read_packet(timeout=60)
            if packet is None:
                return
            acks += packet[0] >> 4 == 4

    reader = asyncio.create_task(read_acks())
    for i in range(count):
        await raw.send(publish_packet(TOPIC, b'{"payload": {}}', packet_id=i % 60_000 + 1))
        while i - acks > 50 and not reader.done():
            await asyncio.sleep(0.001)
    await asyncio.wait_for(reader, 120)
    await raw.close()
    return acks


async def run(server: Any, quick: bool) -> Outcome:
    total = 500 if quick else 2_500
    before = registry_bytes(server)
    cpu, started = server.cpu_seconds(), time.perf_counter()
    async with Bystander(server) as watch:
        acked = await _flood(server, total)
        seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    admin = {"Authorization": f"Bearer {server.info['admin']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.info['api']}", headers=admin) as api:
        await api.get("/v1/audit/refusals")  # where it exists, this writes what was counted
    await asyncio.sleep(3.0)  # rows written after the PUBACKs
    entries, counted = audit_rows(server)
    growth = mb(registry_bytes(server) - before)
    rows = f"{entries} audit rows, {counted} counted ({acked} acked)"
    effect = f"{growth} registry, {rows}; {seconds:.1f} s, {cpu:.1f} s CPU"
    return Outcome(effect, watch.result)
