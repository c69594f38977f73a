"""A broker under test in its own process: `python -m bench.servers gateway|amqtt DATA_DIR`.

Prints one JSON line (ports and the credentials the load needs), then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

DEVICES = 200


async def _gateway(data_dir: Path) -> tuple[dict[str, Any], Any]:
    from gateway.runtime import Gateway
    from gateway.settings import GatewaySettings

    gw = Gateway(
        GatewaySettings(data_dir=data_dir, mqtt_port=0, mqtts_port=0, api_port=0, node_id="bench", log_level="WARNING")
    )
    await gw.start()
    reg = gw.registry
    await reg.tenants.create("bench")
    tokens = []
    for i in range(DEVICES):
        await reg.devices.create("bench", f"d{i}", app_version="v1")
        tokens.append((await reg.credentials.issue_token("bench", f"d{i}")).auth_id)
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
        "ca": str(gw.tls.ca_path if gw.tls else ""),
    }
    return info, gw.stop


async def _amqtt(data_dir: Path) -> tuple[dict[str, Any], Any]:
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
    return {"mqtt": port, "mqtts": tls_port, "tokens": tokens, "ca": str(tls.ca_path)}, broker.shutdown


async def main(kind: str, data_dir: Path) -> None:
    logging.basicConfig(level=logging.ERROR)
    for noisy in ("amqtt", "transitions", "gateway", "registry", "pki"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    info, stop = await (_gateway if kind == "gateway" else _amqtt)(data_dir)
    print(json.dumps(info), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
