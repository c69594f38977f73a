"""Gateway vs bare amqtt 0.12.1 (and Mosquitto when installed) on this machine, same run, same load.

    python -m bench.run [--seconds 5] [--fleet 10000] [--quick]

Each server runs in its own process; the load comes from raw-socket asyncio clients in this
process (aiomqtt tops out below the broker). Prints a table with each ratio gateway / amqtt and
gateway / Mosquitto, the server's CPU per operation and the load generator's CPU share (when it
nears 100% the generator, not the server, is the bottleneck). `--quick` (CI) runs every workload
briefly with a small fleet, to prove the bench still works; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from tests.wire import RawClient, connect_packet, publish_packet, subscribe_packet

from .api import api_rate
from .data_commands import command_trips, data_rate
from .filters import filter_workload
from .fleet import round_trips, storm
from .imports import import_workload
from .server_process import Server


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
    """True when accepted; False when the server said it is busy (CONNACK 3) or dropped the socket
    (stock amqtt resets some TLS handshakes under 50 concurrent clients): neither is counted."""
    try:
        if tls is not None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")
            raw = RawClient(reader, writer)
        else:
            raw = await RawClient.open(port)
        await raw.send(connect_packet(cid, username, password))
        reply = await raw.read_packet()
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return False
    if reply != b"\x20\x02\x00\x00":  # busy (a password check past its queue deadline) or dropped
        await raw.close()
        return False
    await raw.send(b"\xe0\x00")
    await raw.close()
    return True


async def connect_rate(
    s: Server, seconds: float, *, tls: bool = False, password: bool = False, workers: int = 10
) -> float:
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

    await _loop(seconds, workers, one)
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
        await c.send(subscribe_packet(1, f"kp1/v1/app/{tok}/#"))
        await c.read_packet()
        idle.append(c)
    token = tokens[0]
    topic = f"kp1/v1/app/{token}/data"
    sub = await RawClient.open(s.info["mqtt"])
    await sub.send(connect_packet("sub", token))
    await sub.read_packet()
    await sub.send(subscribe_packet(1, f"kp1/v1/app/{token}/#"))
    await sub.read_packet()
    pub = await RawClient.open(s.info["mqtt"])
    await pub.send(connect_packet("pub", token))
    await pub.read_packet()
    packet = publish_packet(topic, b"x" * 64)
    received_bytes = sent = 0
    stop = time.monotonic() + seconds

    async def receive() -> None:
        """Counts bytes, not packets: every delivery is the same packet, and parsing each one in Python
        made the generator, not the broker, the bottleneck (95% CPU)."""
        nonlocal received_bytes
        while data := await asyncio.wait_for(sub.reader.read(1 << 16), 2.0):
            received_bytes += len(data)

    reader = asyncio.create_task(receive())
    while time.monotonic() < stop:
        pub.writer.write(packet * 50)
        sent += 50
        await pub.writer.drain()
        # bounded backlog: never run more than 2,000 messages ahead of the subscriber
        while time.monotonic() < stop and sent - received_bytes // len(packet) > 2000:
            await asyncio.sleep(0.001)
    received = received_bytes // len(packet)
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
        self.ca_key = (root / "ca.key").read_bytes()
        self.certs = [write_device_cert(root, f"bench-{i}") for i in range(devices)]


async def _trust(s: Server, bench_pki: BenchPki) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{s.info['api']}", headers={"Authorization": f"Bearer {s.info['admin']}"}
    ) as api:
        from cryptography import x509

        from pki.ca_proof import load_signing_key, sign_verification_cert
        from pki.certs import pem

        code = (await api.get("/v1/tenants/bench/trusted-cas/registration-code")).json()["registrationCode"]
        proof = sign_verification_cert(
            x509.load_pem_x509_certificate(bench_pki.ca_pem.encode()), load_signing_key(bench_pki.ca_key), code
        )
        body = {"cert": bench_pki.ca_pem, "verificationCert": pem(proof), "autoProvisioningEnabled": True}
        r = await api.post("/v1/tenants/bench/trusted-cas", json=body)
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


@dataclass
class Options:
    seconds: float
    fleet: int
    storm_limit: float
    import_rows: int = 100_000


Workload = tuple[str, Callable[[], Awaitable[float]]]


async def measure(kind: str, o: Options) -> dict[str, tuple[float, float, float]]:
    """workload -> (value, server CPU ms per operation, load generator CPU share)."""
    s = Server(kind, o.fleet)
    out: dict[str, tuple[float, float, float]] = {}
    me = psutil.Process()
    seconds = o.seconds

    async def run(name: str, work: Callable[[], Awaitable[float]], *, per_op: bool = True) -> float:
        cpu0, mine0, t0 = s.cpu_seconds(), _cpu(me), time.monotonic()
        try:
            value = await work()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:  # the server gave up, not the bench
            print(f"{kind}: {name}: failed ({exc!r})")
            value = 0.0
        cpu, mine, wall = s.cpu_seconds() - cpu0, _cpu(me) - mine0, time.monotonic() - t0
        out[name] = (value, cpu / max(value * seconds, 1) * 1000 if per_op else 0.0, mine / max(wall, 1e-9))
        await asyncio.sleep(0.3)
        return value

    try:
        tls = "mqtts" in s.info
        await run("1. token CONNECT+DISCONNECT, 10 clients /s", lambda: connect_rate(s, seconds))
        await run("1. token CONNECT+DISCONNECT, 50 clients /s", lambda: connect_rate(s, seconds, workers=50))
        if tls:
            await run("CONNECT+DISCONNECT, TLS, 10 clients /s", lambda: connect_rate(s, seconds, tls=True))
        await run("QoS 0 publish -> subscriber, 64 B /s", lambda: publish_rate(s, seconds))
        if kind == "gateway":
            bench_pki = BenchPki(devices=int(seconds * 400) + 1)
            await _trust(s, bench_pki)
            await run("CONNECT, password (argon2) /s", lambda: connect_rate(s, seconds, password=True))
            await run("2. mTLS CONNECT, known device /s", lambda: cert_connect_rate(s, seconds, bench_pki))
            await run("2. auto-provisioning (mTLS, 1st CONNECT) /s", lambda: provisioning_rate(s, seconds, bench_pki))
        fleet_tokens: list[str] = s.info["fleet"][: o.fleet]
        tokens: list[str] = s.info["tokens"][:10]
        epmp = kind == "gateway"

        def trips() -> Awaitable[float]:
            return round_trips(s.info["mqtt"], tokens, seconds, epmp=epmp)

        data_devices = min(1_000, len(fleet_tokens))
        await run(
            f"8. data samples -> 1 application, {data_devices:,} devices /s",
            lambda: data_rate(s.info, seconds, data_devices, gateway=epmp),
        )
        await run("9. command round trips, MQTT, 10 devices /s", lambda: command_trips(s.info, seconds, gateway=epmp))
        if kind == "gateway":
            await run(
                "9. command round trips, REST, 10 devices /s",
                lambda: command_trips(s.info, seconds, gateway=True, rest=True),
            )
            await run("11. API requests, one kept-alive connection /s", lambda: api_rate(s.info, seconds))
            imported = await import_workload(s.info, o.import_rows)
            out[f"10. CSV import, {o.import_rows:,} token rows /s"] = (imported["rows_per_s"], 0.0, 0.0)
            out["10. CONNECT p99 ms before the import"] = (imported["p99_before"], 0.0, 0.0)
            out["10. CONNECT p99 ms during the import"] = (imported["p99_during"], 0.0, 0.0)
            devices = o.fleet + o.import_rows
            filtered = await filter_workload(s.info, o.fleet, filters=10, changes=min(50, o.fleet))
            out[f"12. filter first evaluation, {devices:,} devices, s"] = (filtered["scan_s"], 0.0, 0.0)
            out["12. device change -> endpoint/matched p50 ms"] = (filtered["change_p50_ms"], 0.0, 0.0)
            out["12. CONNECT p99 ms, tenant without filters"] = (filtered["connect_p99_without"], 0.0, 0.0)
            out["12. CONNECT p99 ms with 10 filters"] = (filtered["connect_p99_with"], 0.0, 0.0)
        small, _ = await storm(s.info["mqtt"], fleet_tokens[:100], limit_seconds=o.storm_limit)
        await run("3. round trips, 10 devices, 100 idle /s", trips)
        await small.close()
        await asyncio.sleep(1.0)
        rss0 = s.rss_mb()
        fleet, took = await storm(s.info["mqtt"], fleet_tokens, limit_seconds=o.storm_limit)
        n = len(fleet.clients)
        if n < o.fleet:
            print(f"{kind}: {n:,} of {o.fleet:,} devices up after {took:.0f} s; the fleet rows use those")
        out[f"4. reconnect storm: s until {o.fleet:,} SUBACKs"] = (took if n == o.fleet else float("inf"), 0.0, 0.0)
        out[f"5. RSS per idle device, KB (at {o.fleet:,})"] = ((s.rss_mb() - rss0) * 1024 / max(n, 1), 0.0, 0.0)
        await run(f"3. round trips, 10 devices, {o.fleet:,} idle /s", trips)
        await run(f"6. QoS 0 publish -> subscriber, {o.fleet:,} idle /s", lambda: publish_rate(s, seconds))
        await fleet.close()
        out["RSS after the run (MB)"] = (s.rss_mb(), 0.0, 0.0)
    finally:
        s.close()
    return out


async def registry_scale(o: Options, sizes: tuple[int, int]) -> dict[str, tuple[float, float, float]]:
    """Workload 7: token CONNECT with a small and a large registry (each its own gateway)."""
    out = {}
    for size in sizes:
        s = Server("gateway", size)
        try:
            rate = await connect_rate(s, o.seconds)
        finally:
            s.close()
        out[f"7. token CONNECT, {size:,} devices in the registry /s"] = (rate, 0.0, 0.0)
    return out


def _cpu(process: psutil.Process) -> float:
    t = process.cpu_times()
    return float(t.user + t.system)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fleet", type=int, default=10_000, help="idle devices for workloads 3-6")
    parser.add_argument("--quick", action="store_true", help="CI: every workload, briefly, small fleet")
    args = parser.parse_args()
    o = Options(args.seconds, args.fleet, storm_limit=120.0)
    sizes = (1_000, 1_000_000)
    if args.quick:
        o = Options(0.5, 200, storm_limit=20.0, import_rows=2_000)
        sizes = (100, 2_000)
    results = {kind: asyncio.run(measure(kind, o)) for kind in ("amqtt", "gateway")}
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        results["mosquitto"] = asyncio.run(measure("mosquitto", o))
    results["gateway"].update(asyncio.run(registry_scale(o, sizes)))
    kinds = list(results)
    title = f"gateway vs bare amqtt 0.12.1, {os.cpu_count()} cores, {o.seconds:g} s per workload"
    table = Table(title=title + (" (--quick: proves the bench runs; numbers mean nothing)" if args.quick else ""))
    table.add_column("workload")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for kind in kinds[2:]:
        table.add_column(f"gateway / {kind}", justify="right")
    table.add_column("gateway / amqtt", justify="right")
    table.add_column("gateway CPU ms/op", justify="right")
    table.add_column("load gen CPU", justify="right")
    for name, (g_value, g_cpu, g_load) in results["gateway"].items():
        values = [results[k].get(name, (0.0, 0.0, 0.0))[0] for k in kinds]
        row = [name, *(_fmt(v) for v in values)]
        row += [_ratio(g_value, v) for v in values[2:]]
        row += [_ratio(g_value, values[0]), f"{g_cpu:.2f}" if g_cpu else "-", f"{g_load:.0%}" if g_load else "-"]
        table.add_row(*row)
    Console(width=200).print(table)


def _fmt(value: float) -> str:
    if not value:
        return "-"
    if value == float("inf"):
        return "not all"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a and b and b != float("inf") and a != float("inf") else "-"


if __name__ == "__main__":
    main()
