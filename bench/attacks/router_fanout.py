"""Three devices, each with 3 sessions holding 100 filters apiece (a fourth, the most a device may have,
publishes), all matching one topic by distinct paths of `+` and literal levels, publish to that topic as
fast as TCP takes it: every publish walks each of the 300 paths of the subscription index."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from tests.wire import RawClient, publish_packet, subscribe_many

from . import Outcome
from .bystander import Bystander
from .flood import connected, counters, flood

NAME = "router fan-out"
WHAT = "3 devices x 300 filters of their own matching one topic, publishing to it as fast as TCP takes it"
LEVELS = 27  # with the 4 of `kp1/v1/app/<token>`, 31: under the 32 a filter may have
SESSIONS, FILTERS = 3, 100


def _filters(token: str) -> list[str]:
    rng = random.Random(token)
    found: set[str] = set()
    while len(found) < SESSIONS * FILTERS:
        found.add(f"kp1/v1/app/{token}/" + "/".join(rng.choice(("+", "a")) for _ in range(LEVELS)))
    return sorted(found)


def _packet(token: str, n: int) -> bytes:
    return publish_packet(f"kp1/v1/app/{token}/" + "/".join(["a"] * LEVELS), b"x")


async def _subscribed(port: int, token: str) -> list[RawClient]:
    """The device's sessions, each holding its share of the filters, read and dropped as they come."""
    filters = _filters(token)
    sessions = []
    for i in range(SESSIONS):
        raw = await connected(port, f"fan-{token[:8]}-{i}", token)
        mine = filters[i * FILTERS : (i + 1) * FILTERS]
        await raw.send(subscribe_many(1, [(f, 0) for f in mine]))
        suback = await raw.read_packet(timeout=30)
        assert suback is not None and 0x80 not in suback[4:], "a filter was refused"
        sessions.append(raw)
    return sessions


async def _drop_all(raw: RawClient) -> None:
    while await raw.reader.read(65_536):
        pass


async def run(server: Any, quick: bool) -> Outcome:
    tokens = server.info["tokens"][:3]
    port = server.info["mqtt"]
    sessions = [s for t in tokens for s in await _subscribed(port, t)]
    readers = [asyncio.ensure_future(_drop_all(s)) for s in sessions]
    before = await counters(server)
    async with Bystander(server) as watch:
        sent = await flood(port, [(t, None) for t in tokens], _packet, 5 if quick else 20)
    after = await counters(server)
    for task in readers:
        task.cancel()
    for raw in sessions:
        await raw.close()
    delivered = after["messagesOut"] - before["messagesOut"]
    return Outcome(f"{sent:,} publishes sent, {delivered:,} deliveries", watch.result)
