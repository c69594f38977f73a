"""One tenant's devices each retain ~1 MiB (the most one device may) until the node's 64 MiB retained
budget is full; then another tenant's device retains one small message and subscribes to see it
replayed (issue 17 point 6)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_packet

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "retained hog"
WHAT = "70 devices of one tenant retain ~1 MiB each, again and again; another tenant's device retains 1 KiB"
MAX_PACKET = 1_048_576


async def _session(port: int, token: str, client_id: str) -> RawClient:
    raw = await RawClient.open(port)
    await raw.send(connect_packet(client_id, token))
    reply = await raw.read_packet(timeout=30)
    assert reply is not None and reply[3] == 0, reply
    return raw


async def _retain(port: int, token: str, payload_size: int | None = None, payload: bytes = b"") -> None:
    raw = await _session(port, token, "retainer")
    topic = f"kp1/v1/app/{token}/state"
    if payload_size is not None:  # as large as one packet and the device's 1 MiB retained budget allow
        payload = b"r" * (payload_size - len(topic) - 4)
    try:
        await raw.send(publish_packet(topic, payload, retain=True, packet_id=1))
        await raw.read_packet(timeout=30)  # PUBACK, kept or not
    finally:
        await raw.close()


async def _replayed(port: int, token: str) -> bool:
    raw = await _session(port, token, "reader")
    try:
        await raw.send(subscribe_packet(1, f"kp1/v1/app/{token}/state"))
        await raw.read_packet(timeout=30)  # SUBACK
        try:
            return await raw.read_packet(timeout=2) is not None
        except TimeoutError:
            return False
    finally:
        await raw.close()


async def _limits(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.info['admin']}"}) as api:
        metrics = (await api.get(f"http://127.0.0.1:{server.info['api']}/v1/metrics")).json()
    return dict(metrics.get("limitsHit", {}))


async def run(server: Server, quick: bool) -> Outcome:
    port, hogs = server.info["mqtt"], server.info["tokens"][:70]
    victim = server.info["bystander_token"]
    before = server.rss_mb()
    loop = asyncio.get_running_loop()
    async with Bystander(server) as watch:
        end = loop.time() + (3 if quick else 10)
        rounds = 0
        while rounds == 0 or loop.time() < end:  # the hog's devices keep updating their retained state
            for i in range(0, len(hogs), 10):
                await asyncio.gather(*(_retain(port, token, MAX_PACKET) for token in hogs[i : i + 10]))
            if rounds == 0:  # the node's budget is full now (before the fix)
                first = await _limits(server)
                await _retain(port, victim, payload=b"s" * 1024)  # a device state of 1 KiB
                kept = await _replayed(port, victim)
            rounds += 1
    refused = sum(v for k, v in first.items() if "retained" in k)  # the hog's, in its first round
    effect = (
        f"{len(hogs) - refused} of {len(hogs)} hog messages kept ({refused} refused), {rounds} rounds; the other"
        f" tenant's retained message {'kept and replayed' if kept else 'NOT kept'};"
        f" RSS +{server.rss_mb() - before:,.0f} MB"
    )
    return Outcome(effect, watch.result)
