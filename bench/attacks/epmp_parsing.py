"""Three devices send 64 KiB 10/EPMP `update/keys` requests holding one key whose value is
`[{},{},...]` (21,842 values): refused 413 either way, but before issue 17 only after a full parse,
in request tasks that run on the event loop like everything else."""

from __future__ import annotations

from typing import Any

from tests.wire import publish_packet

from . import Outcome
from .bystander import Bystander
from .flood import counters, flood

NAME = "10/EPMP parsing"
WHAT = '3 devices send 64 KiB `update/keys` `{"k":[{},{},...]}` requests, as fast as TCP takes them'
PAYLOAD = b'{"k":[' + b",".join([b"{}"] * 21_841) + b"]}"


def _packet(token: str, n: int) -> bytes:
    return publish_packet(f"kp1/v1/epmx/{token}/update/keys/{n % 60_000 + 1}", PAYLOAD)


def _answers(found: dict[str, Any]) -> dict[str, int]:
    """10/EPMP requests answered, by status."""
    by_status: dict[str, int] = {}
    for key, n in found.get("kp1Requests", {}).items():
        extension, status = key.partition("/")[0], key.rsplit("/", 1)[1]  # "epmx//update/keys/413"
        if extension == "epmx":
            by_status[status] = by_status.get(status, 0) + n
    return by_status


async def run(server: Any, quick: bool) -> Outcome:
    tokens = server.info["tokens"][:3]
    before = await counters(server)
    async with Bystander(server) as watch:
        sent = await flood(server.info["mqtt"], [(t, None) for t in tokens], _packet, 5 if quick else 20)
    after = await counters(server)
    was, now = _answers(before), _answers(after)
    answered = ", ".join(f"{now[s] - was.get(s, 0):,} x {s}" for s in sorted(now) if now[s] - was.get(s, 0))
    parsed = after.get("payloadsParsed", {}).get("epmx", 0) - before.get("payloadsParsed", {}).get("epmx", 0)
    return Outcome(f"{sent:,} sent; answered {answered or 'none'}; {parsed:,} parsed", watch.result)
