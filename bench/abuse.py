"""What one hostile device costs the server: the gateway against bare amqtt 0.12.1, same run.

    python -m bench.abuse [--quick]

Each server runs in its own process (bench.servers); the attacks come from raw sockets here:
1. three connections send QoS 2 PUBLISHes (512 KiB each) and never PUBREL them, then close;
2. a subscriber that never reads while 64 KiB messages are published to it;
3. one device subscribes to many filters; another device's publish -> own subscriber round trip
   is timed before and after.
Prints the server's RSS growth for 1 and 2, and the round-trip ratio for 3.

Then the gateway alone meets the attacks of bench/attacks/ (one module each, listed in ATTACKS), each
with another tenant's 10/EPMP round trips measured meanwhile, beside the same bystander's figure with
no attack running.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from types import ModuleType

from rich.console import Console
from rich.table import Table

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_many, subscribe_packet

from .attacks import (
    Outcome,
    anonymous_writes,
    data_validation,
    epmp_parsing,
    half_sent_packets,
    invocation_flood,
    invocation_parsing,
    login_guessing,
    metadata_flood,
    password_guessing,
    retained_hog,
    router_fanout,
    socket_hog,
    token_oracle,
)
from .attacks.bystander import Bystander, RoundTrips
from .server_process import Server

ATTACKS: list[ModuleType] = [
    anonymous_writes,  # point 1
    login_guessing,  # point 1
    metadata_flood,  # point 2
    data_validation,  # point 3
    epmp_parsing,  # point 3
    invocation_parsing,  # point 3
    router_fanout,  # point 3
    invocation_flood,  # point 4
    password_guessing,  # point 5
    retained_hog,  # point 6
    socket_hog,  # point 7
    half_sent_packets,  # point 7
    token_oracle,  # point 8
]
"""The modules of bench/attacks/ run against the gateway, in this order."""


async def _connected(port: int, client_id: str, username: str) -> RawClient:
    raw = await RawClient.open(port)
    await raw.send(connect_packet(client_id, username))
    reply = await raw.read_packet()
    assert reply is not None and reply[3] == 0, reply
    return raw


def _topic(server: Server, i: int) -> str:
    token = server.info["tokens"][i]
    return f"kp1/v1/app/{token}/x" if server.kind == "gateway" else f"t/{i}/x"


async def unreleased_qos2(server: Server, messages: int) -> float:
    before = server.rss_mb()
    payload = b"q" * 524_288
    for c in range(3):
        raw = await _connected(server.info["mqtt"], f"q2-{c}", server.info["tokens"][c])
        for packet_id in range(1, messages + 1):
            try:
                await raw.send(publish_packet(_topic(server, c), payload, packet_id=packet_id, qos=2))
            except ConnectionError:
                break  # the gateway closes the connection at its bound
        await asyncio.sleep(0.5)
        await raw.close()
    await asyncio.sleep(1.0)
    return server.rss_mb() - before


async def deaf_subscriber(server: Server, megabytes: int) -> float:
    before = server.rss_mb()
    deaf = await _connected(server.info["mqtt"], "deaf", server.info["tokens"][10])
    await deaf.send(subscribe_packet(1, _topic(server, 10), 0))
    pub = await _connected(server.info["mqtt"], "pub", server.info["tokens"][10])
    chunk = b"z" * 65_536
    for i in range(megabytes * 16):
        await pub.send(publish_packet(_topic(server, 10), chunk, packet_id=(i % 60_000) + 1))
        if i % 64 == 63:  # keep PUBACKs from piling up in our own socket
            await _drain(pub)
    await asyncio.sleep(1.0)
    grown = server.rss_mb() - before
    await pub.close()
    await deaf.close()
    return grown


async def _drain(raw: RawClient) -> None:
    try:
        while await raw.read_packet(timeout=0.01) is not None:
            pass
    except TimeoutError:
        pass


async def _round_trips(port: int, token: str, topic: str, count: int) -> float:
    raw = await _connected(port, "rt", token)
    await raw.send(subscribe_packet(1, topic, 0))
    await raw.read_packet()
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await raw.send(publish_packet(topic, b"ping"))
            await raw.read_packet(timeout=10)
            samples.append(time.perf_counter() - start)
    except TimeoutError:
        samples.append(float("inf"))  # no answer within 10 s
    await raw.close()
    return statistics.median(samples) * 1000


async def many_subscriptions(server: Server, filters: int) -> tuple[float, float, int]:
    port, victim = server.info["mqtt"], server.info["tokens"][20]
    before = await _round_trips(port, victim, _topic(server, 20), 200)
    hog = await _connected(port, "hog", server.info["tokens"][21])
    granted = 0
    base = _topic(server, 21).removesuffix("/x")
    for n in range(0, filters, 500):
        await hog.send(subscribe_many(n // 500 + 1, [(f"{base}/{n + i}", 0) for i in range(500)]))
        reply = await hog.read_packet(timeout=300)
        assert reply is not None
        header = 2 + next(i for i, byte in enumerate(reply[1:5]) if not byte & 0x80)  # type, length, packet id
        granted += sum(1 for code in reply[header + 2 :] if code != 0x80)
    after = await _round_trips(port, victim, _topic(server, 20), 200)
    await hog.close()
    return before, after, granted


async def main(quick: bool) -> None:
    qos2_messages, deaf_mb, filters = (40, 32, 5_000) if quick else (100, 200, 100_000)
    rows = []
    for kind in ("amqtt", "gateway"):
        server = Server(kind)
        try:
            print(f"{kind}: QoS 2 ...", file=sys.stderr, flush=True)
            q2 = await unreleased_qos2(server, qos2_messages)
            print(f"{kind}: deaf subscriber ...", file=sys.stderr, flush=True)
            deaf = await deaf_subscriber(server, deaf_mb)
            print(f"{kind}: subscriptions ...", file=sys.stderr, flush=True)
            before, after, granted = await many_subscriptions(server, filters)
            rows.append((kind, q2, deaf, before, after, granted, server.rss_mb()))
        finally:
            server.close()
    table = Table(title="one hostile device: server cost (RSS MB growth; round trip ms, median)")
    for col in ("server", "QoS 2 never released", "subscriber never reads", "rt before", "rt after", "filters", "RSS"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for kind, q2, deaf, before, after, granted, rss in rows:
        table.add_row(
            kind,
            f"+{q2:,.0f} MB",
            f"+{deaf:,.0f} MB",
            f"{before:.2f}",
            f"{after:.2f} ({after / before:.1f}x)",
            f"{granted:,} of {filters:,}",
            f"{rss:,.0f} MB",
        )
    Console(width=140).print(table)
    print(
        f"attacks: 3 x {qos2_messages} QoS 2 PUBLISHes of 512 KiB without PUBREL; {deaf_mb} MB to a subscriber "
        f"that never reads; {filters:,} filters from one device, then another device's round trips"
    )


async def attacks(quick: bool) -> None:
    """Each attack on a gateway of its own, so that what one left behind does not weigh on the next."""
    rows: list[tuple[str, str, Outcome]] = []
    quiet: RoundTrips | None = None
    for attack in ATTACKS:
        server = Server("gateway", settings=getattr(attack, "SETTINGS", None))
        try:
            if quiet is None:
                async with Bystander(server) as watch:
                    await asyncio.sleep(3 if quick else 10)
                quiet = watch.result
            print(f"gateway: {attack.NAME} ...", file=sys.stderr, flush=True)
            rows.append((attack.NAME, attack.WHAT, await attack.run(server, quick)))
        finally:
            server.close()
    table = Table(title=f"attacks on the gateway; another tenant's 10/EPMP round trips with no attack: {quiet}")
    for col in ("attack", "what the attacker does", "what it got", "the bystander meanwhile"):
        table.add_column(col)
    for name, what, outcome in rows:
        table.add_row(name, what, outcome.effect, str(outcome.bystander) if outcome.bystander else "-")
    Console(width=160).print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller attacks, for CI")
    quick = parser.parse_args().quick
    asyncio.run(main(quick))
    if ATTACKS:
        asyncio.run(attacks(quick))
