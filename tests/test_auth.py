"""Point 3: token and username/password authentication, and every refusal."""

from __future__ import annotations

import logging

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connect_refused, connection, make_device, mqtt, ok
from .wire import connack, connect_packet

NOT_AUTHORIZED = 135  # paho's name for a 3.1.1 CONNACK return code 5; the wire byte is pinned below


async def test_token_connects_and_first_use_activates_it(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    before = await ok(api.get(f"/v1/tenants/acme/devices/dev-1/tokens/{token}"))
    assert before["state"] == "inactive" and before["lastUsedAt"] is None
    async with mqtt(gateway, token, client_id="c1"):
        pass
    after = await ok(api.get(f"/v1/tenants/acme/devices/dev-1/tokens/{token}"))
    assert after["state"] == "active"
    assert after["lastUsedAt"] is not None


async def test_token_over_tls(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token, tls=True) as client:
        await client.publish(f"kp1/v1/app/{token}/x", b"1")
        status = await connection(api, "acme", "dev-1")
        assert status["connected"] is True


async def test_refusal_is_connack_5_on_the_wire(gateway: Gateway) -> None:
    reply = await connack(gateway.ports["mqtt"], connect_packet("c", "no-such-token"))
    assert reply == b"\x20\x02\x00\x05"


async def test_password_authentication(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/sensor.1", json={"password": "s3cret pass"}))
    async with mqtt(gateway, "sensor.1@acme", "s3cret pass") as client:
        # a password session may use the device's token in its topics
        await client.subscribe(f"kp1/v1/app/{token}/#")
    creds = await ok(api.get("/v1/tenants/acme/devices/dev-1/passwords"))
    assert creds[0]["state"] == "active" and creds[0]["username"] == "sensor.1@acme"
    assert creds[0]["lastUsedAt"] is not None
    assert "password" not in str(creds).replace("passwords", "")


async def test_password_is_stored_hashed(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "plain-text-pw"}))
    raw = gateway.settings.registry_path.read_bytes()
    for wal in gateway.settings.data_dir.glob("*-wal"):
        raw += wal.read_bytes()
    assert b"plain-text-pw" not in raw
    assert b"$argon2id$" in raw


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("unknown-token", None, "unknown_credential"),
        ("p1@acme", "wrong", "bad_password"),
        ("nobody@acme", "x", "unknown_credential"),
        ("p1@other-tenant", "pw", "unknown_credential"),
        ("p1@", "pw", "malformed_username"),
        ("TOKEN", "a-password", "password_with_token"),
        (None, None, "no_username"),
        ("has space", None, "malformed_username"),
    ],
)
async def test_refusals_are_counted_and_logged(
    gateway: Gateway,
    api: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    username: str | None,
    password: str | None,
    reason: str,
) -> None:
    token = await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "pw"}))
    if username == "TOKEN":
        username = token
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        assert await connect_refused(gateway, username, password) == NOT_AUTHORIZED
    lines = [r.getMessage() for r in caplog.records if "connect_refused" in r.getMessage()]
    assert len(lines) == 1 and f"reason={reason}" in lines[0]
    assert token not in lines[0] and "pw" not in lines[0].split("reason=")[1].split()[0]
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["connectsRefused"] == {reason: 1}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("token-suspended", "credential_suspended"),
        ("token-revoked", "credential_revoked"),
        ("device-disabled", "device_disabled"),
        ("tenant-disabled", "tenant_disabled"),
        ("device-deleted", "unknown_credential"),
        ("tenant-deleted", "unknown_credential"),
    ],
)
async def test_refused_after_state_change(gateway: Gateway, api: httpx.AsyncClient, change: str, reason: str) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token):
        pass
    what, _, state = change.partition("-")
    if what == "token":
        await ok(api.patch(f"/v1/tenants/acme/devices/dev-1/tokens/{token}", json={"state": state}))
    elif what == "device" and state == "disabled":
        await ok(api.patch("/v1/tenants/acme/devices/dev-1", json={"enabled": False}))
    elif what == "tenant" and state == "disabled":
        await ok(api.patch("/v1/tenants/acme", json={"enabled": False}))
    elif what == "device":
        await ok(api.delete("/v1/tenants/acme/devices/dev-1"), 204)
    else:
        await ok(api.delete("/v1/tenants/acme"), 204)
    assert await connect_refused(gateway, token) == NOT_AUTHORIZED
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["connectsRefused"] == {reason: 1}


async def test_password_refused_when_credential_suspended(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "pw"}))
    await ok(api.patch("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"state": "suspended"}))
    assert await connect_refused(gateway, "p1@acme", "pw") == NOT_AUTHORIZED
    await ok(api.patch("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"state": "active"}))
    async with mqtt(gateway, "p1@acme", "pw"):
        pass


async def test_reactivated_token_connects_again(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    await ok(api.patch(f"/v1/tenants/acme/tokens/{token}", json={"state": "suspended"}))
    assert await connect_refused(gateway, token) == NOT_AUTHORIZED
    await ok(api.patch(f"/v1/tenants/acme/tokens/{token}", json={"state": "active"}))
    async with mqtt(gateway, token):
        pass


async def test_given_token_and_generated_token_entropy(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, token="my-own_token~1-Qw8Zr2Lk5Tm")  # a chosen one must be strong (issue 17)
    assert token == "my-own_token~1-Qw8Zr2Lk5Tm"
    async with mqtt(gateway, token):
        pass
    generated = await ok(api.post("/v1/tenants/acme/devices/dev-1/tokens"), 201)
    assert len(generated["token"]) >= 22  # 128+ bits in URL-safe base64
    assert set(generated["token"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def test_a_registry_failure_says_come_back_later(
    gateway: Gateway, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credential was not judged: CONNACK 3 (server unavailable), which clients retry, not 5."""
    token = await make_device(api)

    async def broken(_token: str) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(gateway.registry.credentials, "find_token", broken)
    assert await connack(gateway.ports["mqtt"], connect_packet("c", token)) == b"\x20\x02\x00\x03"
    assert (await ok(api.get("/v1/metrics")))["connectsRefused"] == {"registry_unavailable": 1}
    monkeypatch.undo()
    async with mqtt(gateway, token):
        pass
