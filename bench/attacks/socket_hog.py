"""One tenant's 200 devices connect (keep-alive 0) to a node capped at 200 sockets and hold their
sessions, those refused reconnecting in a loop; meanwhile another tenant's device keeps trying to
connect (issue 17 point 7)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from tests.wire import RawClient, connect_packet

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "socket hog"
WHAT = "200 devices of one tenant hold sessions on a node of max_connections 200, the refused retrying"
SETTINGS: dict[str, object] = {"max_connections": 200}
ACCEPTED = b"\x20\x02\x00\x00"


async def _hold(port: int, token: str, stop: asyncio.Event, held: set[str]) -> None:
    """Connects and holds the session; refused or reset, tries again 50 ms later, until `stop`."""
    while not stop.is_set():
        try:
            raw = await RawClient.open(port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            await raw.send(connect_packet("hog", token, keepalive=0))
            if await raw.read_packet(timeout=10) == ACCEPTED:
                held.add(token)
                await stop.wait()
                return
        except (OSError, TimeoutError):
            pass
        finally:
            held.discard(token)
            with contextlib.suppress(Exception):
                await raw.close()
        await asyncio.sleep(0.05)


async def _newcomer(port: int, token: str) -> str:
    """Another tenant's device connecting: 'accepted', 'refused' (a CONNACK code) or 'reset'."""
    try:
        raw = await RawClient.open(port)
        try:
            await raw.send(connect_packet("newcomer", token))
            reply = await raw.read_packet(timeout=10)
            if reply == ACCEPTED:
                await raw.send(b"\xe0\x00")
                return "accepted"
            return "reset" if reply is None else "refused"
        finally:
            await raw.close()
    except (OSError, TimeoutError):
        return "reset"


async def _refusals(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.info['admin']}"}) as api:
        metrics = (await api.get(f"http://127.0.0.1:{server.info['api']}/v1/metrics")).json()
    return dict(metrics.get("connectsRefused", {}))


async def run(server: Server, quick: bool) -> Outcome:
    port, tokens = server.info["mqtt"], server.info["tokens"][:200]
    stop, held = asyncio.Event(), set[str]()
    outcomes: list[str] = []
    async with Bystander(server) as watch:
        hogs = [asyncio.create_task(_hold(port, token, stop, held)) for token in tokens]
        await asyncio.sleep(3)
        most = 0
        for _ in range(10 if quick else 30):
            outcomes.append(await _newcomer(port, server.info["bystander_token"]))
            most = max(most, len(held))
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*hogs)
    refusals = ", ".join(f"{k} {v}" for k, v in sorted((await _refusals(server)).items()))
    effect = (
        f"the hog held {most} of 200 sockets; another tenant's new device: {outcomes.count('accepted')}"
        f" of {len(outcomes)} CONNACK 0, {outcomes.count('refused')} refused, {outcomes.count('reset')} reset"
        f" (refusals: {refusals})"
    )
    return Outcome(effect, watch.result)
