"""A bystander: another tenant's device doing 10/EPMP `get` round trips, one outstanding, in a process
of its own, for as long as an attack runs.

    async with Bystander(server) as watch:
        ...the attack...
    watch.result  # RoundTrips: p50, p95, max in ms, and how many

`python -m bench.attacks.bystander PORT TOKEN` is that process: it prints one JSON line of samples (ms)
when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_packet

from ..server_process import ROOT


@dataclass(frozen=True)
class RoundTrips:
    count: int
    p50: float
    p95: float
    max: float
    lost: int = 0
    """Requests with no answer within 10 s."""

    @classmethod
    def of(cls, samples: list[float], lost: int = 0) -> RoundTrips:
        if not samples:
            return cls(0, float("inf"), float("inf"), float("inf"), lost)
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        return cls(len(ordered), statistics.median(ordered), p95, ordered[-1], lost)

    def __str__(self) -> str:
        lost = f", {self.lost} lost" if self.lost else ""
        return f"p50 {self.p50:.1f} / p95 {self.p95:.1f} / max {self.max:.0f} ms ({self.count}{lost})"


class Bystander:
    def __init__(self, server: Any) -> None:
        self._port = server.info["mqtt"]
        self._token = server.info["bystander_token"]
        self._proc: subprocess.Popen[str] | None = None
        self.result: RoundTrips | None = None

    async def __aenter__(self) -> Bystander:
        self._proc = subprocess.Popen(  # noqa: ASYNC220 (once per attack)
            [sys.executable, "-m", "bench.attacks.bystander", str(self._port), self._token],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        await asyncio.to_thread(self._proc.stdout.readline)  # "ready": connected and subscribed
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        line = await asyncio.to_thread(self._proc.stdout.readline)
        await asyncio.to_thread(self._proc.wait, 30)
        found: dict[str, Any] = json.loads(line) if line else {"samples": [], "lost": 0}
        self.result = RoundTrips.of(found["samples"], found["lost"])


async def _watch(port: int, token: str) -> None:
    raw = await RawClient.open(port)
    await raw.send(connect_packet("bystander", token))
    await raw.read_packet(timeout=30)
    await raw.send(subscribe_packet(1, f"kp1/v1/epmx/{token}/get/+/status"))
    await raw.read_packet(timeout=30)
    print("ready", flush=True)
    stop = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
    samples: list[float] = []
    lost = 0
    request = publish_packet(f"kp1/v1/epmx/{token}/get/1", b"")
    while not stop.done():
        start = time.perf_counter()
        await raw.send(request)
        try:
            if await raw.read_packet(timeout=10) is None:
                break
            samples.append((time.perf_counter() - start) * 1000)
        except TimeoutError:
            lost += 1
        await asyncio.sleep(0.01)  # ~100 requests/s: a device, not a load generator
    await stop
    print(json.dumps({"samples": samples, "lost": lost}), flush=True)


if __name__ == "__main__":
    asyncio.run(_watch(int(sys.argv[1]), sys.argv[2]))
