"""Gateway vs bare amqtt 0.12.1 on this machine, same run, same load generator.

    python -m bench.run [--seconds 5]

Each server runs in its own process; the load comes from raw-socket asyncio clients in this
process (aiomqtt tops out below the broker). Prints a table with each ratio gateway / amqtt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_packet

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._dir = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, self._dir.name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.info: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        self._dir.cleanup()


async def _loop(seconds: float, workers: int, one: Callable[[int], Awaitable[None]]) -> int:
    deadline = time.monotonic() + seconds
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < deadline:
            await one(w * 1_000_000 + i)
            i += 1
            done += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return done


async def _connect_once(
    port: int, username: str | None, password: str | None, cid: str, tls: ssl.SSLContext | None = None
) -> bool:
    """True when accepted; False when the server said it is busy (CONNACK 3)."""
    if tls is not None:
        reader, writer = await asyncio.open_connection("localhost", port, ssl=tls)
        raw = RawClient(reader, writer)
    else:
        raw = await RawClient.open(port)
    await raw.send(connect_packet(cid, username, password))
    reply = await raw.read_packet()
    if reply == b"\x20\x02\x00\x03":  # server busy (a password check past its queue deadline): not counted
        await raw.close()
        return False
    assert reply == b"\x20\x02\x00\x00", reply
    await raw.send(b"\xe0\x00")
    await raw.close()
    return True


async def connect_rate(s: Server, seconds: float, *, tls: bool = False, password: bool = False) -> float:
    tokens = s.info["tokens"]
    context = ssl.create_default_context(cafile=s.info["ca"]) if tls else None
    port = s.info["mqtts" if tls else "mqtt"]

    accepted = 0

    async def one(i: int) -> None:
        nonlocal accepted
        if password:
            ok = await _connect_once(port, s.info["password_user"], s.info["password"], f"c{i}", context)
        else:
            ok = await _connect_once(port, tokens[i % len(tokens)], None, f"c{i}", context)
        accepted += ok  # not `accepted += await ...`: that reads `accepted` before the await

    await _loop(seconds, 10, one)
    return accepted / seconds


async def publish_rate(s: Server, seconds: float, idle_sessions: int = 0) -> float:
    """QoS 0, 64-byte payloads, one device publishing to its own topic and subscribed to it."""
    tokens = s.info["tokens"]
    idle = []
    for i in range(idle_sessions):
        c = await RawClient.open(s.info["mqtt"])
        tok = tokens[1 + i % (len(tokens) - 1)]
        await c.send(connect_packet(f"idle{i}", tok))
        await c.read_packet()
        await c.send(subscribe_packet(1, f"kp1/v1/dcx/{tok}/#"))
        await c.read_packet()
        idle.append(c)
    token = tokens[0]
    topic = f"kp1/v1/dcx/{token}/data"
    sub = await RawClient.open(s.info["mqtt"])
    await sub.send(connect_packet("sub", token))
    await sub.read_packet()
    await sub.send(subscribe_packet(1, f"kp1/v1/dcx/{token}/#"))
    await sub.read_packet()
    pub = await RawClient.open(s.info["mqtt"])
    await pub.send(connect_packet("pub", token))
    await pub.read_packet()
    packet = publish_packet(topic, b"x" * 64)
    received = sent = 0
    stop = time.monotonic() + seconds

    async def receive() -> None:
        nonlocal received
        while await sub.read_packet(timeout=2.0) is not None:
            received += 1

    reader = asyncio.create_task(receive())
    while time.monotonic() < stop:
        pub.writer.write(packet * 50)
        sent += 50
        await pub.writer.drain()
        # bounded backlog: never run more than 2,000 messages ahead of the subscriber
        while time.monotonic() < stop and sent - received > 2000:
            await asyncio.sleep(0.001)
    rate = received / seconds
    reader.cancel()
    for c in [sub, pub, *idle]:
        await c.close()
    return rate


class BenchPki:
    """A CA and device certificates made before the run (key generation is not what we measure)."""

    def __init__(self, devices: int) -> None:
        from pki.devca import write_ca, write_device_cert

        self._dir = tempfile.TemporaryDirectory()
        root = Path(self._dir.name)
        write_ca(root, "bench CA")
        self.ca_pem = (root / "ca.pem").read_text()
        self.certs = [write_device_cert(root, f"bench-{i}") for i in range(devices)]


async def _trust(s: Server, bench_pki: BenchPki) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{s.info['api']}", headers={"Authorization": f"Bearer {s.info['admin']}"}
    ) as api:
        r = await api.post(
            "/v1/tenants/bench/trusted-cas", json={"cert": bench_pki.ca_pem, "autoProvisioningEnabled": True}
        )
        r.raise_for_status()


def _client_context(s: Server, cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=s.info["ca"])
    context.load_cert_chain(*cert)
    return context


async def cert_connect_rate(s: Server, seconds: float, bench_pki: BenchPki) -> float:
    """A known certificate device (provisioned by a first connect before timing starts)."""
    context = _client_context(s, bench_pki.certs[0])
    await _connect_once(s.info["mqtts"], None, None, "warm", context)
    n = await _loop(seconds, 10, lambda i: _connect_once(s.info["mqtts"], None, None, f"c{i}", context))
    return n / seconds


async def provisioning_rate(s: Server, seconds: float, bench_pki: BenchPki) -> float:
    """Each CONNECT brings a new certificate: every one creates a device on its first connection."""
    contexts = [_client_context(s, c) for c in bench_pki.certs[1:]]
    done = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()

    async def worker(w: int) -> None:
        nonlocal done
        while time.monotonic() < deadline and contexts:
            context = contexts.pop()
            await _connect_once(s.info["mqtts"], None, None, f"p{w}", context)
            done += 1

    await asyncio.gather(*(worker(w) for w in range(10)))
    return done / (time.monotonic() - start)


async def measure(kind: str, seconds: float) -> dict[str, tuple[float, float]]:
    """workload -> (rate, server CPU seconds per operation)."""
    s = Server(kind)
    out: dict[str, tuple[float, float]] = {}
    try:
        workloads: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("CONNECT+DISCONNECT, plain (10 clients)", lambda: connect_rate(s, seconds)),
            ("CONNECT+DISCONNECT, TLS (10 clients)", lambda: connect_rate(s, seconds, tls=True)),
            ("QoS 0 publish -> subscriber, 64 B", lambda: publish_rate(s, seconds)),
            ("same, with 100 idle subscribed devices", lambda: publish_rate(s, seconds, 100)),
        ]
        if kind == "gateway":
            bench_pki = BenchPki(devices=int(seconds * 400) + 1)
            await _trust(s, bench_pki)
            workloads += [
                ("CONNECT, password (argon2)", lambda: connect_rate(s, seconds, password=True)),
                ("CONNECT+DISCONNECT, mTLS known device", lambda: cert_connect_rate(s, seconds, bench_pki)),
                ("auto-provisioned devices (mTLS, 1st CONNECT)", lambda: provisioning_rate(s, seconds, bench_pki)),
            ]
        for name, run in workloads:
            cpu0 = s.cpu_seconds()
            rate = await run()
            cpu = s.cpu_seconds() - cpu0
            out[name] = (rate, cpu / max(rate * seconds, 1) * 1000)
            await asyncio.sleep(0.5)
        out["RSS after the run (MB)"] = (s.rss_mb(), 0.0)
    finally:
        s.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    amqtt = asyncio.run(measure("amqtt", args.seconds))
    gateway = asyncio.run(measure("gateway", args.seconds))
    table = Table(title=f"gateway vs bare amqtt 0.12.1, {os.cpu_count()} cores, {args.seconds:g} s per workload")
    for col in ("workload", "amqtt /s", "gateway /s", "gateway / amqtt", "amqtt CPU ms/op", "gateway CPU ms/op"):
        table.add_column(col, justify="left" if col == "workload" else "right")
    for name in gateway:
        g_rate, g_cpu = gateway[name]
        a_rate, a_cpu = amqtt.get(name, (0.0, 0.0))
        ratio = f"{g_rate / a_rate:.2f}" if a_rate else "-"
        table.add_row(
            name,
            f"{a_rate:,.0f}" if a_rate else "-",
            f"{g_rate:,.0f}",
            ratio,
            f"{a_cpu:.2f}" if a_cpu else "-",
            f"{g_cpu:.2f}" if g_cpu else "-",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
