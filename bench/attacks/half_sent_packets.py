"""400 sessions (keep-alive 0) each send a 1 MiB PUBLISH minus one byte and then nothing, so the gateway
holds what came of each packet (issue 17 point 7)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.wire import RawClient, connect_packet, publish_packet

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "half-sent packets"
WHAT = "400 keep-alive 0 sessions each send a 1 MiB PUBLISH minus its last byte, then nothing"
SESSIONS_PER_DEVICE = 2


async def _half_send(port: int, token: str, client_id: str) -> RawClient | None:
    """The session with its packet sent but for the last byte; None if the gateway closed it meanwhile."""
    raw: RawClient | None = None
    try:
        raw = await RawClient.open(port)
        await raw.send(connect_packet(client_id, token, keepalive=0))
        if await raw.read_packet(timeout=30) != b"\x20\x02\x00\x00":
            raise ConnectionResetError("not accepted")
        topic = f"kp1/v1/app/{token}/big"
        packet = publish_packet(topic, b"h" * (1_048_576 - len(topic) - 4), packet_id=1)
        await raw.send(packet[:-1])
        return raw
    except (OSError, TimeoutError):  # closed by the gateway (a reset, a broken pipe)
        if raw is not None:
            with contextlib.suppress(Exception):
                await raw.close()
        return None


async def _closed(raw: RawClient) -> bool:
    try:
        return await raw.closed_by_peer(0.01)
    except OSError:
        return True


async def run(server: Server, quick: bool) -> Outcome:
    port = server.info["mqtt"]
    sessions = 100 if quick else 400
    targets = [(token, f"h{n}") for token in server.info["tokens"][: sessions // SESSIONS_PER_DEVICE] for n in range(2)]
    before = server.rss_mb()
    async with Bystander(server) as watch:
        opened: list[RawClient | None] = []
        for i in range(0, len(targets), 50):
            opened += await asyncio.gather(*(_half_send(port, t, c) for t, c in targets[i : i + 50]))
        await asyncio.sleep(2)
        peak = server.rss_mb() - before
        alive = [raw for raw in opened if raw is not None]
        still = [raw for raw in alive if not await _closed(raw)]
        closed_at_once = len(targets) - len(still)
        start = time.monotonic()
        waited = 0.0
        while still and waited < (5 if quick else 40):  # packet_timeout is 30 s
            await asyncio.sleep(1)
            still = [raw for raw in still if not await _closed(raw)]
            waited = time.monotonic() - start
        for raw in alive:
            with contextlib.suppress(Exception):
                await raw.close()
    effect = (
        f"RSS +{peak:,.0f} MB; {closed_at_once} of {len(targets)} closed at once, {len(still)} still open"
        f" {waited:.0f} s later"
    )
    return Outcome(effect, watch.result)
