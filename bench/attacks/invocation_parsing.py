"""A tenant's application (service account) publishes 1 MiB command invocations (`max_packet_bytes`)
whose payload is `[{},{},...]`: refused 413 either way, but before issue 17 only after a full parse
of the whole MiB."""

from __future__ import annotations

from typing import Any

from tests.wire import publish_packet

from . import Outcome
from .bystander import Bystander
from .flood import counters, flood, grown

NAME = "invocation parsing"
WHAT = "an application publishes 1 MiB `$gateway/commands/...` invocations of `[{},{},...]`"
PAYLOAD = b'{"payload":[' + b",".join([b"{}"] * 349_000) + b"]}"


def _packet(user: str, n: int) -> bytes:
    return publish_packet("$gateway/commands/bench/d0/reboot", PAYLOAD)


async def run(server: Any, quick: bool) -> Outcome:
    before = await counters(server)
    login = (server.info["app_user"], server.info["app_password"])
    async with Bystander(server) as watch:
        sent = await flood(server.info["mqtt"], [login], _packet, 5 if quick else 20)
    after = await counters(server)
    refused = grown(before, after, "commandsRefused", "413")
    parsed = grown(before, after, "payloadsParsed", "commands")
    return Outcome(f"{sent:,} sent; {refused:,} refused 413; {parsed:,} parsed", watch.result)
