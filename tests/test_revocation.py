"""Point 6: revoking, disabling or deleting closes the device's live session within 1 second."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connection, make_device, ok
from .wire import RawClient, connect_packet

CHANGES = {
    "token suspended": ("PATCH", "/v1/tenants/acme/devices/dev-1/tokens/{token}", {"state": "suspended"}),
    "token revoked": ("PATCH", "/v1/tenants/acme/tokens/{token}", {"state": "revoked"}),
    "token deleted": ("DELETE", "/v1/tenants/acme/devices/dev-1/tokens/{token}", None),
    "device disabled": ("PATCH", "/v1/tenants/acme/devices/dev-1", {"enabled": False}),
    "device deleted": ("DELETE", "/v1/tenants/acme/devices/dev-1", None),
    "tenant disabled": ("PATCH", "/v1/tenants/acme", {"enabled": False}),
    "tenant deleted": ("DELETE", "/v1/tenants/acme", None),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_change_closes_live_session_within_a_second(
    gateway: Gateway, api: httpx.AsyncClient, change: str
) -> None:
    token = await make_device(api)
    bystander = await make_device(api, "globex", "other")
    victim, other = await RawClient.open(gateway.ports["mqtt"]), await RawClient.open(gateway.ports["mqtt"])
    try:
        await victim.send(connect_packet("v", token))
        await other.send(connect_packet("o", bystander))
        assert await victim.read_packet() == b"\x20\x02\x00\x00"
        assert await other.read_packet() == b"\x20\x02\x00\x00"
        method, path, body = CHANGES[change]
        start = time.monotonic()
        r = await api.request(method, path.format(token=token), json=body)
        assert r.status_code in (200, 204), r.text
        assert await victim.closed_by_peer(1.0)
        assert time.monotonic() - start < 1.0
        assert await other.silent_for(0.2)  # another tenant's device is untouched
    finally:
        await victim.close()
        await other.close()
    if "deleted" not in change or change == "token deleted":
        status = await connection(api, "acme", "dev-1")
        assert status["connected"] is False
        assert status["log"][0]["reason"] == "kicked_by_operator"
        assert status["log"][0]["detail"] == change
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["sessionsKicked"] == 1


async def test_password_session_closed_when_its_token_is_revoked(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "pw"}))
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("p", "p1@acme", "pw"))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        await ok(api.patch(f"/v1/tenants/acme/tokens/{token}", json={"state": "revoked"}))
        assert await raw.closed_by_peer(1.0)
    finally:
        await raw.close()
