"""Issue 17 point 9: a revoked device acted once more: its will went through 10/EPMP and 2/DCP after its
token was suspended or it was disabled. A will is authorized when it is published, not only at CONNECT.

Two ways a revoked session ends: the revocation's kick closes it (its will must not go out), or it ends
by itself after the revocation committed and before any kick reached it (written here straight to the
registry, as a revocation whose kick has not arrived: the will is checked against the registry then).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.node.runtime import Gateway
from registry.models import CredentialKind, CredentialState

from .conftest import make_device, mqtt, next_message, ok, wait_until
from .pki_helpers import device_tls, make_ca, make_device_cert
from .test_events import collect, service_account
from .test_x509 import ACCEPTED, add_ca, tls_connack
from .wire import RawClient, connect_packet

DATA = "$gateway/data/acme/+/dcx"


@dataclass
class Device:
    device_id: str
    token: str
    ca_id: str | None = None
    tls: ssl.SSLContext | None = None

    async def connect_with_will(self, gateway: Gateway, kind: str, client_id: str) -> RawClient:
        topic, payload = will(kind, self.token)
        if self.tls is None:
            raw = await RawClient.open(gateway.ports["mqtt"])
        else:
            reader, writer = await asyncio.open_connection("localhost", gateway.ports["mqtts"], ssl=self.tls)
            raw = RawClient(reader, writer)
        await raw.send(connect_packet(client_id, self.token if self.tls is None else None, will=(topic, payload)))
        assert await raw.read_packet() == ACCEPTED
        return raw


def will(kind: str, token: str) -> tuple[str, bytes]:
    if kind == "epmp":
        return f"kp1/v1/epmx/{token}/update/keys", b'{"will": "sent"}'
    return f"kp1/v1/dcx/{token}/json", b'[{"will": "sent"}]'


async def token_device(api: httpx.AsyncClient, device_id: str) -> Device:
    return Device(device_id, await make_device(api, "acme", device_id))


async def certificate_device(gateway: Gateway, api: httpx.AsyncClient, device_id: str, tmp_path: Path) -> Device:
    ca = make_ca(tmp_path / device_id, f"CA of {device_id}")
    created = await add_ca(api, "acme", ca, autoProvisioningEnabled=True, appVersion="v1")
    cert = make_device_cert(tmp_path / device_id, ca, device_id)
    assert await tls_connack(gateway, cert) == ACCEPTED  # provisioned: its token is its device id
    return Device(device_id, device_id, str(created["id"]), device_tls(gateway, cert))


Revoke = Callable[[Gateway, httpx.AsyncClient, Device], Awaitable[Any]]

# committed in the registry, no kick (yet): the session ends by itself meanwhile
IN_REGISTRY: dict[str, Revoke] = {
    "suspend token": lambda gw, _api, d: gw.registry.credentials.set_state(
        "acme", d.device_id, CredentialKind.TOKEN, d.token, CredentialState.SUSPENDED
    ),
    "disable device": lambda gw, _api, d: gw.registry.devices.update("acme", d.device_id, enabled=False),
    "disable tenant": lambda gw, _api, d: gw.registry.tenants.update("acme", enabled=False),
    "delete device": lambda gw, _api, d: gw.registry.devices.delete("acme", d.device_id),
    "remove CA": lambda gw, _api, d: gw.registry.trusted_cas.delete("acme", d.ca_id or ""),
}
# through the management API: committed, then the session is kicked
THROUGH_API: dict[str, Revoke] = {
    "suspend token": lambda _gw, api, d: ok(
        api.patch(f"/v1/tenants/acme/devices/{d.device_id}/tokens/{d.token}", json={"state": "suspended"})
    ),
    "disable device": lambda _gw, api, d: ok(
        api.patch(f"/v1/tenants/acme/devices/{d.device_id}", json={"enabled": False})
    ),
    "disable tenant": lambda _gw, api, d: ok(api.patch("/v1/tenants/acme", json={"enabled": False})),
    "delete device": lambda _gw, api, d: ok(api.delete(f"/v1/tenants/acme/devices/{d.device_id}"), 204),
    "remove CA": lambda _gw, api, d: ok(api.delete(f"/v1/tenants/acme/trusted-cas/{d.ca_id}"), 204),
}

CASES = [
    # (how, what, will kind): every revocation, each will kind where its effect stays observable (a
    # deleted device has no metadata to write; disabling the tenant through the API kicks the application)
    *[
        ("registry", what, kind)
        for what in IN_REGISTRY
        for kind in ("epmp", "dcp")
        if (what, kind) != ("delete device", "epmp")
    ],
    *[("api", what, "epmp" if what == "disable tenant" else "dcp") for what in THROUGH_API],
]


async def _session_over(gateway: Gateway, device_id: str) -> None:
    async def over() -> bool:
        broker = gateway.broker
        assert broker is not None
        live = any(key.startswith(f"acme/{device_id}/") for key in broker.table.live)
        return not live and not broker.inbound.request_tasks

    await wait_until(over, timeout=5)


@pytest.mark.parametrize(("how", "what", "kind"), CASES)
async def test_a_revoked_devices_will_does_not_go_out(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, how: str, what: str, kind: str
) -> None:
    make = (lambda i: certificate_device(gateway, api, i, tmp_path)) if what == "remove CA" else None
    control = await (make("ctl-1") if make else token_device(api, "ctl-1"))
    victim = await (make("vic-1") if make else token_device(api, "vic-1"))
    app = await service_account(api)
    async with mqtt(gateway, app["username"], app["password"], client_id="app") as application:
        await application.subscribe(DATA, qos=1)
        # the control: a will of a device nobody revoked goes out, in this very setup
        raw = await control.connect_with_will(gateway, kind, "c")
        raw.writer.transport.abort()
        if kind == "dcp":
            assert [t for t, _ in await collect(application, 1)] == ["$gateway/data/acme/ctl-1/dcx"]
        else:
            await wait_until(lambda: _metadata_has_will(gateway, "ctl-1"))
        raw = await victim.connect_with_will(gateway, kind, "v")
        await (IN_REGISTRY if how == "registry" else THROUGH_API)[what](gateway, api, victim)
        raw.writer.transport.abort()  # gone without DISCONNECT (or kicked already)
        await _session_over(gateway, "vic-1")
        if kind == "dcp":
            assert await collect(application, 1, timeout=0.5) == []
        else:
            assert not await _metadata_has_will(gateway, "vic-1")
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["willsRefused"] == (0 if how == "api" else 1)  # a kicked session's will is not even tried


async def _metadata_has_will(gateway: Gateway, device_id: str) -> bool:
    return "will" in await gateway.registry.metadata.get("acme", device_id)


async def test_a_will_to_a_token_suspended_since_connect_is_refused(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A password session uses its device's tokens in topics: its will checks the one its topic names."""
    await make_device(api, "acme", "dev-1")
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "s3cret pass"}))
    app = await service_account(api)
    async with mqtt(gateway, app["username"], app["password"], client_id="app") as application:
        await application.subscribe(DATA, qos=1)
        raw = await RawClient.open(gateway.ports["mqtt"])
        topic, payload = will("dcp", "dev-1")
        await raw.send(connect_packet("p", "p1@acme", "s3cret pass", will=(topic, payload)))
        assert await raw.read_packet() == ACCEPTED
        await gateway.registry.credentials.set_state(
            "acme", "dev-1", CredentialKind.TOKEN, "dev-1", CredentialState.SUSPENDED
        )
        raw.writer.transport.abort()
        await _session_over(gateway, "dev-1")
        assert await collect(application, 1, timeout=0.5) == []


async def test_wills_of_healthy_devices_still_go_out_to_every_extension(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api, "acme", "dev-1")
    watcher_topic = f"kp1/v1/app/{token}/will"
    async with mqtt(gateway, token, client_id="watcher") as watcher:
        await watcher.subscribe(watcher_topic, qos=1)
        raw = await RawClient.open(gateway.ports["mqtt"])
        await raw.send(connect_packet("w", token, will=(watcher_topic, b"gone")))
        assert await raw.read_packet() == ACCEPTED
        raw.writer.transport.abort()
        message = await next_message(watcher, 3)
        assert message is not None and message.payload == b"gone"
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["willsRefused"] == 0
