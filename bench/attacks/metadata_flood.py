"""One device rewrites its metadata (10/EPMP `update/keys`, ~48 KiB of new values each time) as fast as
it is answered, 50 requests in flight (within `epmp_max_pending`), for 20 s (5 s with --quick). Its
tenant has a service account that is not connected, so every event waits in the outbox. Measured:
what the registry file (with its WAL) grew by, how many writes were applied and how many refused."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from tests.wire import RawClient, connect_packet, publish_fields, publish_packet, subscribe_packet

from . import Outcome
from .bystander import Bystander

NAME = "metadata flood"
WHAT = "one device sends 10/EPMP update/keys (~48 KiB of values each) as fast as answered"
WAVE = 50


def registry_bytes(data_dir: Path) -> int:
    files = [data_dir / "registry.sqlite3", data_dir / "registry.sqlite3-wal"]
    return sum(f.stat().st_size for f in files if f.exists())


def _payload(n: int) -> bytes:
    return json.dumps({key: f"{n:08d}{key}" * 1800 for key in ("a", "b", "c")}).encode()  # 3 x ~16 KB


async def flood(port: int, token: str, seconds: float) -> dict[str, int]:
    """Writes until `seconds` have passed; returns the answers by outcome."""
    raw = await RawClient.open(port)
    base = f"kp1/v1/epmx/{token}/update/keys"
    counts: dict[str, int] = {"ok": 0, "429": 0, "other": 0}
    try:
        await raw.send(connect_packet("flooder", token) + subscribe_packet(1, f"{base}/#"))
        await raw.read_packet(timeout=30)
        await raw.read_packet(timeout=30)
        deadline, n = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            await raw.send(b"".join(publish_packet(f"{base}/{n + i + 1}", _payload(n + i)) for i in range(WAVE)))
            n += WAVE
            for _ in range(WAVE):
                reply = await raw.read_packet(timeout=30)
                if reply is None:
                    return counts
                _, topic, _, body = publish_fields(reply)
                if topic.endswith("/status"):
                    counts["ok"] += 1
                elif json.loads(body).get("statusCode") == 429:
                    counts["429"] += 1
                else:
                    counts["other"] += 1
    finally:
        await raw.close()
    return counts


async def run(server: Any, quick: bool) -> Outcome:
    seconds = 5.0 if quick else 20.0
    data_dir = Path(server.info["data_dir"])
    before = registry_bytes(data_dir)
    async with Bystander(server) as watch:
        counts = await flood(server.info["mqtt"], server.info["tokens"][30], seconds)
        await asyncio.sleep(2.0)  # the compactor's rounds
    grown = (registry_bytes(data_dir) - before) / 1e6
    effect = (
        f"+{grown:,.1f} MB registry in {seconds:.0f} s; {counts['ok']:,} writes applied, "
        f"{counts['429']:,} refused 429" + (f", {counts['other']:,} other errors" if counts["other"] else "")
    )
    return Outcome(effect, watch.result)
