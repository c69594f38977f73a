"""Three devices send 64 KiB 2/DCP data messages of `[{},{},...]` (21,844 empty samples: over
`data_max_samples`, so each is refused 413, but only once it was validated)."""

from __future__ import annotations

from typing import Any

from tests.wire import publish_packet

from . import Outcome
from .bystander import Bystander
from .flood import counters, flood, grown

NAME = "data validation"
WHAT = "3 devices send 64 KiB `[{},{},...]` 2/DCP messages, as fast as TCP takes them"
PAYLOAD = b"[" + b",".join([b"{}"] * 21_844) + b"]"


def _packet(token: str, n: int) -> bytes:
    return publish_packet(f"kp1/v1/dcx/{token}/json/{n % 60_000 + 1}", PAYLOAD)


async def run(server: Any, quick: bool) -> Outcome:
    tokens = server.info["tokens"][:3]
    before = await counters(server)
    async with Bystander(server) as watch:
        sent = await flood(server.info["mqtt"], [(t, None) for t in tokens], _packet, 5 if quick else 20)
    after = await counters(server)
    counts = {code: grown(before, after, "dataRefused", code) for code in ("413", "429")}
    refused = ", ".join(f"{n:,} x {code}" for code, n in counts.items() if n)
    parsed = grown(before, after, "payloadsParsed", "dcx")
    return Outcome(f"{sent:,} sent; refused {refused or 'none'}; {parsed:,} parsed", watch.result)
