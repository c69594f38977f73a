"""The gateway's own workload: a large, mostly idle fleet, each device subscribed below its own token.

Used by bench.run: a reconnect storm that brings the fleet up (workload 4), the RSS it costs
(workload 5), request/response round trips among it (workload 3: 10/EPMP `get` on the gateway; a
publish to the client's own subscription on amqtt and Mosquitto) and QoS 0 throughput (workload 6).
Raw sockets: one connection costs the load generator a socket and a reader, nothing else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_packet

# below the gateway's per-address cap on sockets still in CONNECT (128): the generator is one address
STORM_CONCURRENCY = 100


@dataclass
class Fleet:
    """Idle devices, connected and subscribed to their own reply topics."""

    clients: list[RawClient] = field(default_factory=list)

    async def close(self) -> None:
        for client in self.clients:
            client.writer.transport.abort()
        self.clients.clear()


async def _join(port: int, token: str, client_id: str) -> RawClient | None:
    client = await RawClient.open(port)
    await client.send(connect_packet(client_id, token, keepalive=0))
    if await client.read_packet(timeout=60) != b"\x20\x02\x00\x00":
        client.writer.transport.abort()
        return None
    await client.send(subscribe_packet(1, f"kp1/v1/epmx/{token}/#"))
    suback = await client.read_packet(timeout=60)
    if suback is None or suback[0] != 0x90:
        client.writer.transport.abort()
        return None
    return client


async def storm(port: int, tokens: list[str], *, limit_seconds: float) -> tuple[Fleet, float]:
    """Connects and subscribes every token (STORM_CONCURRENCY at a time): the fleet, and seconds until
    the last SUBACK (the fleet is partial when `limit_seconds` passed first)."""
    fleet = Fleet()
    queue = list(reversed(tokens))
    start = time.monotonic()
    deadline = start + limit_seconds

    async def worker() -> None:
        while queue and time.monotonic() < deadline:
            token = queue.pop()
            try:
                client = await _join(port, token, f"idle-{token}")
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                continue
            if client is not None:
                fleet.clients.append(client)

    await asyncio.gather(*(worker() for _ in range(STORM_CONCURRENCY)))
    return fleet, time.monotonic() - start


async def round_trips(port: int, tokens: list[str], seconds: float, *, epmp: bool) -> float:
    """Request/response per second from len(tokens) devices, one request outstanding each: a 10/EPMP
    `get` of the device's metadata (gateway), or a publish to the client's own subscription."""
    clients = []
    for i, token in enumerate(tokens):
        client = await RawClient.open(port)
        await client.send(connect_packet(f"rt{i}", token))
        await client.read_packet()
        reply = f"kp1/v1/epmx/{token}/get/1/status" if epmp else f"kp1/v1/epmx/{token}/echo"
        await client.send(subscribe_packet(1, reply))
        await client.read_packet()
        clients.append(client)
    done = 0
    deadline = time.monotonic() + seconds

    async def loop(client: RawClient, token: str) -> None:
        nonlocal done
        request = publish_packet(f"kp1/v1/epmx/{token}/get/1" if epmp else f"kp1/v1/epmx/{token}/echo", b"{}")
        while time.monotonic() < deadline:
            await client.send(request)
            if await client.read_packet(timeout=10) is None:
                return
            done += 1

    await asyncio.gather(*(loop(c, t) for c, t in zip(clients, tokens, strict=True)))
    for client in clients:
        await client.close()
    return done / seconds
