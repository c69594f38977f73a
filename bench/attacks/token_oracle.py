"""A token oracle (issue 17 point 8): a tenant whose CA auto-provisions tries CNs from one address, one
of them another tenant's live endpoint token. The gateway used to refuse exactly that CN
(`token_taken`, not counted as a failed guess) and provision every other: the odd answer out named a
live token, which then connected as its device. Measured: the answers the attacker got, the strings
it could tell apart, whether one connected as the victim, and the gateway's refusal reasons.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from tests.pki_helpers import make_ca, make_device_cert
from tests.wire import RawClient, connect_packet

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "token oracle"
WHAT = "a tenant's auto-provisioning CA: CN guesses from one address, one of them another tenant's live token"


async def _connack(port: int, context: ssl.SSLContext | None, username: str | None) -> int:
    """The CONNACK return code, or -1 when the connection was closed without one."""
    if context is None:
        raw = await RawClient.open(port)
    else:
        reader, writer = await asyncio.open_connection("localhost", port, ssl=context)
        raw = RawClient(reader, writer)
    try:
        await raw.send(connect_packet("guess", username))
        reply = await raw.read_packet(timeout=10)
        return -1 if reply is None else reply[3]
    except (ConnectionError, ssl.SSLError):
        return -1
    finally:
        await raw.close()


async def run(server: Server, quick: bool) -> Outcome:
    info = server.info
    guesses = 50 if quick else 150
    admin = {"Authorization": f"Bearer {info['admin']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info['api']}", headers=admin, timeout=30) as api:
        await api.post("/v1/tenants", json={"id": "victim"})
        await api.post("/v1/tenants/victim/devices", json={"id": "boiler-1", "appVersion": "v1"})
        victim = (await api.post("/v1/tenants/victim/devices/boiler-1/tokens")).json()["token"]
        before = (await api.get("/v1/metrics")).json()["connectsRefused"]
        with tempfile.TemporaryDirectory() as tmp:
            ca = make_ca(Path(tmp), "Attacker devices CA")
            await api.post("/v1/tenants", json={"id": "attacker"})
            upload = {"cert": ca.pem, "autoProvisioningEnabled": True}
            r = await api.post("/v1/tenants/attacker/trusted-cas", json=upload)
            assert r.status_code == 201, r.text
            names = [f"probe-{i:04d}" for i in range(guesses - 1)]
            names.insert(random.randrange(guesses), victim)
            answers: dict[str, int] = {}
            async with Bystander(server) as watch:
                for i, name in enumerate(names):
                    cert = make_device_cert(Path(tmp) / "d", ca, name, stem=f"g{i}")
                    context = ssl.create_default_context(cafile=info["ca"])
                    context.load_cert_chain(cert.cert_path, cert.key_path)
                    answers[name] = await _connack(info["mqtts"], context, None)
        after = (await api.get("/v1/metrics")).json()["connectsRefused"]
    counts = Counter(answers.values())
    usual = counts.most_common(1)[0][0]
    told_apart = [name for name, code in answers.items() if code != usual]
    learned = [name for name in told_apart if name == victim]
    connected = [name for name in learned if await _connack(info["mqtt"], None, name) == 0]
    reasons = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    answered = ", ".join(f"{n} x CONNACK {code}" for code, n in sorted(counts.items()))
    effect = (
        f"{guesses} guesses: {answered}; told apart {len(told_apart)}, of them the victim's token"
        f" {len(learned)}; connected as the victim: {'yes' if connected else 'no'}; refusals {reasons or 'none'}"
    )
    return Outcome(effect, watch.result)
