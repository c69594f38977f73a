"""The load of the CPU attacks: devices that each pipeline one expensive PUBLISH as fast as their socket
takes it, while the bystander measures; and the gateway's counters before and after (`/v1/metrics`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.wire import RawClient, connect_packet

Packet = Callable[[str, int], bytes]
"""(the device's token, the message's number) -> the PUBLISH packet to send."""


async def connected(port: int, client_id: str, username: str, password: str | None = None) -> RawClient:
    raw = await RawClient.open(port)
    await raw.send(connect_packet(client_id, username, password))
    reply = await raw.read_packet(timeout=30)
    assert reply is not None and reply[3] == 0, reply
    return raw


async def flood(port: int, logins: list[tuple[str, str | None]], packet: Packet, seconds: float) -> int:
    """Each login (username, password) on a connection of its own sends `packet` for `seconds`, as fast
    as TCP lets it, reading (and dropping) whatever comes back. Returns how many were sent in all."""
    clients = [await connected(port, f"flood-{i}", user, pw) for i, (user, pw) in enumerate(logins)]
    sent = 0
    stop = time.monotonic() + seconds

    async def send(raw: RawClient, user: str) -> None:
        nonlocal sent
        n = 0
        try:
            while time.monotonic() < stop:
                n += 1
                await raw.send(packet(user, n))
                sent += 1
        except ConnectionError:
            pass

    async def drain(raw: RawClient) -> None:
        while True:
            data = await raw.reader.read(65_536)
            if not data:
                return

    readers = [asyncio.ensure_future(drain(raw)) for raw in clients]
    await asyncio.gather(*(send(raw, user) for raw, (user, _) in zip(clients, logins, strict=True)))
    for task in readers:
        task.cancel()
    for raw in clients:
        await raw.close()
    return sent


async def counters(server: Any) -> dict[str, Any]:
    """The gateway's `/v1/metrics`."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.info['api']}", timeout=30) as client:
        reply = await client.get("/v1/metrics", headers={"Authorization": f"Bearer {server.info['admin']}"})
        reply.raise_for_status()
        found: dict[str, Any] = reply.json()
        return found


def grown(before: dict[str, Any], after: dict[str, Any], *path: str) -> int:
    """How much one counter (a path into `/v1/metrics`, e.g. "dataRefused", "413") grew; 0 if absent."""

    def at(found: Any) -> int:
        for step in path:
            found = found.get(step, 0) if isinstance(found, dict) else 0
        return int(found)

    return at(after) - at(before)
