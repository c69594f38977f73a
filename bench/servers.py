"""A broker under test in its own process: `python -m bench.servers gateway|amqtt|mosquitto DATA_DIR [FLEET]`.

Prints one JSON line (ports and the credentials the load needs), then serves until stdin closes.
The gateway's registry holds FLEET devices with tokens `f<n>` (one bulk import) besides the 200
devices `d<n>` of the small workloads; amqtt and Mosquitto take anyone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEVICES = 200


async def _gateway(data_dir: Path, fleet: int) -> tuple[dict[str, Any], Any]:
    from gateway.node.runtime import Gateway
    from gateway.node.settings import GatewaySettings

    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "mqtt_port": 0,
        "mqtts_port": 0,
        "api_port": 0,
        "node_id": "bench",
        "log_level": "WARNING",
        "max_connections": fleet + 10_000,  # the fleet, and the workloads' clients beside it
        "data_messages_per_second": 10_000,  # workload 8 measures the node, not one device's allowance
        "data_burst": 10_000,
    }
    gw = Gateway(GatewaySettings(**(settings | json.loads(sys.argv[4] if len(sys.argv) > 4 else "{}"))))
    await gw.start()
    reg = gw.registry
    await reg.tenants.create("bench")
    tokens = []
    for i in range(DEVICES):
        await reg.devices.create("bench", f"d{i}", app_version="v1")
        tokens.append((await reg.credentials.issue_token("bench", f"d{i}")).auth_id)
    for start in range(0, fleet, 100_000):
        ids = [f"f{i}" for i in range(start, min(fleet, start + 100_000))]
        await reg.devices.import_devices("bench", ids, app_version="v1", with_tokens=True, certificate_bound=False)
    await reg.tenants.create("bystander")  # another tenant's device: what an attack costs everyone else
    await reg.devices.create("bystander", "b1", app_version="v1")
    bystander_token = (await reg.credentials.issue_token("bystander", "b1")).auth_id
    app_password = "bench-app-secret"
    await reg.service_accounts.create("bench", "app", await gw.services.hasher.hash(app_password))
    await reg.devices.create("bench", "pw")
    await reg.credentials.set_password("bench", "pw", "pw", await gw.services.hasher.hash("secret"))
    info = {
        "mqtt": gw.ports["mqtt"],
        "mqtts": gw.ports["mqtts"],
        "api": gw.ports["api"],
        "admin": gw.admin_token,
        "tokens": tokens,
        "password_user": "pw@bench",
        "password": "secret",
        "app_user": "app@bench",
        "app_password": app_password,
        "ca": str(gw.tls.ca_path if gw.tls else ""),
        "fleet": [f"f{i}" for i in range(min(fleet, 20_000))],
        "bystander_token": bystander_token,
        "data_dir": str(data_dir),
    }
    return info, gw.stop


async def _amqtt(data_dir: Path, fleet: int) -> tuple[dict[str, Any], Any]:
    from amqtt.broker import Broker

    from pki.devca import ensure_server_tls

    tls = ensure_server_tls(data_dir / "tls", ["localhost", "127.0.0.1"])
    broker = Broker(
        {
            "listeners": {
                "default": {"type": "tcp", "bind": "127.0.0.1:0"},
                "tls": {
                    "type": "tcp",
                    "bind": "127.0.0.1:0",
                    "ssl": True,
                    "certfile": str(tls.cert_path),
                    "keyfile": str(tls.key_path),
                },
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    port = broker._servers["default"].instance.sockets[0].getsockname()[1]
    tls_port = broker._servers["tls"].instance.sockets[0].getsockname()[1]
    tokens = [f"anon-{i}" for i in range(DEVICES)]
    info = {"mqtt": port, "mqtts": tls_port, "tokens": tokens, "ca": str(tls.ca_path), "fleet": _anonymous(fleet)}
    return info, broker.shutdown


def _anonymous(fleet: int) -> list[str]:
    return [f"f{i}" for i in range(min(fleet, 20_000))]


async def _mosquitto(data_dir: Path, fleet: int) -> tuple[dict[str, Any], Any]:
    """Debian's mosquitto on a free loopback port, anonymous clients allowed, no persistence."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = data_dir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n")
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    tokens = [f"anon-{i}" for i in range(DEVICES)]

    async def stop() -> None:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)

    return {"mqtt": port, "tokens": tokens, "fleet": _anonymous(fleet), "pid": proc.pid}, stop


async def main(kind: str, data_dir: Path) -> None:
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("amqtt", "transitions", "gateway", "registry", "pki"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    fleet = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    start = {"gateway": _gateway, "amqtt": _amqtt, "mosquitto": _mosquitto}[kind]
    info, stop = await start(data_dir, fleet)
    print(json.dumps(info), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await stop()


if __name__ == "__main__":
    if sys.argv[1] == "gateway":
        from gateway.cli.serve import run_loop  # as `mqtt-gateway serve` runs: BENCH_EVENT_LOOP=uvloop to compare

        run_loop(main(sys.argv[1], Path(sys.argv[2])), os.environ.get("BENCH_EVENT_LOOP", "asyncio"))
    else:
        asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
