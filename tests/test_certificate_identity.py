"""Security issue, items 1-3: a certificate device cannot be impersonated by its CN, one certificate can be
revoked, and rotating a password closes what the old one opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway
from registry import Registry
from registry.database import _migrations

from .conftest import connection, make_device, ok
from .pki_helpers import make_ca, make_device_cert
from .test_x509 import ACCEPTED, REFUSED, add_ca, metrics, tls_connack
from .wire import RawClient, connack, connect_packet


async def _provisioned(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, cn: str = "kettle-42") -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, cn)) == ACCEPTED


# -- 1. the CN is public: a token equal to it never authenticates on its own --------------------------


async def test_cn_as_username_is_refused_without_the_devices_certificate(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    victim = make_device_cert(tmp_path, ca, "kettle-42")
    other = make_device_cert(tmp_path, ca, "kettle-43")
    assert await tls_connack(gateway, victim) == ACCEPTED
    assert await tls_connack(gateway, other) == ACCEPTED
    tokens = await ok(api.get("/v1/tenants/acme/devices/kettle-42/tokens"))
    assert [(t["token"], t["certificateBound"]) for t in tokens] == [("kettle-42", True)]
    before = (await metrics(api))["connectsRefused"]
    assert before == {}

    # the plain port, and the TLS port without a certificate
    assert await connack(gateway.ports["mqtt"], connect_packet("spoof", "kettle-42")) == REFUSED
    assert await tls_connack(gateway, None, username="kettle-42") == REFUSED
    # another device's certificate (same CA, same tenant), and a certificate of another tenant's CA
    assert await tls_connack(gateway, other, username="kettle-42") == REFUSED
    globex_ca = make_ca(tmp_path / "globex", "Globex CA")
    await add_ca(api, "globex", globex_ca, autoProvisioningEnabled=True)
    assert await tls_connack(gateway, make_device_cert(tmp_path, globex_ca, "g-1"), username="kettle-42") == REFUSED
    refused = (await metrics(api))["connectsRefused"]
    assert refused == {"certificate_required": 2, "credential_mismatch": 2}
    status = await connection(api, "acme", "kettle-42")
    assert [e["event"] for e in status["log"]] == ["disconnected", "connected"]  # only its own one connect

    # its own certificate, with or without its token as username, still works
    assert await tls_connack(gateway, victim, username="kettle-42") == ACCEPTED


async def test_cn_token_stays_refused_after_the_ca_is_disabled(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    created = await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "kettle-42")) == ACCEPTED
    await ok(api.patch(f"/v1/tenants/acme/trusted-cas/{created['id']}", json={"enabled": False}))
    assert await connack(gateway.ports["mqtt"], connect_packet("spoof", "kettle-42")) == REFUSED
    assert await tls_connack(gateway, None, username="kettle-42") == REFUSED


async def test_operator_issued_tokens_of_a_certificate_device_work_as_before(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await _provisioned(gateway, api, tmp_path)
    issued = await ok(api.post("/v1/tenants/acme/devices/kettle-42/tokens"), 201)
    assert issued["certificateBound"] is False
    assert await connack(gateway.ports["mqtt"], connect_packet("op", issued["token"])) == ACCEPTED


async def test_imported_tokens_are_bound_too(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await gateway.registry.devices.import_devices("acme", ["imp-1"], with_tokens=True)
    assert await connack(gateway.ports["mqtt"], connect_packet("x", "imp-1")) == REFUSED
    assert (await metrics(api))["connectsRefused"] == {"certificate_required": 1}


async def test_migration_binds_tokens_made_by_auto_provisioning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry written before the rule: its auto-provisioned tokens become bound, operator tokens stay."""
    path = tmp_path / "r.sqlite3"
    old = [m for m in _migrations() if m[0] <= 3]
    monkeypatch.setattr("registry.database._migrations", lambda: old)
    reg = await Registry(path).open()
    await reg.close()
    with sqlite3.connect(path) as db:  # rows as the schema-3 gateway wrote them
        db.executescript(
            """
            INSERT INTO tenants (id, created_at, updated_at) VALUES ('acme', 0, 0);
            INSERT INTO devices (tenant_id, id, auto_provisioned, created_at, updated_at)
                VALUES ('acme', 'kettle-42', 1, 0, 0), ('acme', 'manual', 0, 0, 0);
            INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, created_at, updated_at)
                VALUES ('acme', 'kettle-42', 'x509', 'ab12', 'active', 0, 0),
                       ('acme', 'kettle-42', 'token', 'kettle-42', 'active', 0, 0),
                       ('acme', 'kettle-42', 'token', 'operator-token', 'active', 0, 0),
                       ('acme', 'manual', 'token', 'manual', 'active', 0, 0);
            """
        )
    monkeypatch.undo()
    reg = await Registry(path).open()
    try:
        tokens = ("kettle-42", "operator-token")
        bound = {t: (await reg.credentials.find_tenant_token("acme", t)).certificate_bound for t in tokens}  # type: ignore[union-attr]
        assert bound == {"kettle-42": True, "operator-token": False}
        assert (await reg.credentials.find_token("manual")).certificate_bound is False  # type: ignore[union-attr]
    finally:
        await reg.close()


# -- 2. one certificate through the credential states ---------------------------------------------------


@pytest.mark.parametrize("state", ["suspended", "revoked"])
async def test_suspending_or_revoking_a_certificate_closes_its_sessions(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, state: str
) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    device = make_device_cert(tmp_path, ca, "kettle-42")
    live = await tls_connack(gateway, device, keep_open=True)
    assert isinstance(live, RawClient)
    try:
        certs = await ok(api.get("/v1/tenants/acme/devices/kettle-42/certificates"))
        assert len(certs) == 1 and certs[0]["state"] == "active" and certs[0]["caId"]
        fingerprint = certs[0]["fingerprint"]
        changed = await ok(
            api.patch(f"/v1/tenants/acme/devices/kettle-42/certificates/{fingerprint}", json={"state": state})
        )
        assert changed["state"] == state
        assert await live.closed_by_peer(1.0)
    finally:
        await live.close()
    assert await tls_connack(gateway, device) == REFUSED
    assert (await metrics(api))["connectsRefused"] == {f"credential_{state}": 1}
    log = (await connection(api, "acme", "kettle-42"))["log"]
    assert log[0]["reason"] == "kicked_by_operator" or log[1]["reason"] == "kicked_by_operator"
    if state == "suspended":  # suspended -> active again lets it back in; revoked is terminal
        await ok(api.patch(f"/v1/tenants/acme/devices/kettle-42/certificates/{fingerprint}", json={"state": "active"}))
        assert await tls_connack(gateway, device) == ACCEPTED
    else:
        r = await api.patch(f"/v1/tenants/acme/devices/kettle-42/certificates/{fingerprint}", json={"state": "active"})
        assert r.status_code == 409


async def test_certificate_api_refuses_unknown_fingerprints_and_other_devices(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await _provisioned(gateway, api, tmp_path)
    await make_device(api, "acme", "plain")
    fingerprint = (await ok(api.get("/v1/tenants/acme/devices/kettle-42/certificates")))[0]["fingerprint"]
    assert (await api.get("/v1/tenants/acme/devices/plain/certificates")).json() == []
    r = await api.patch(f"/v1/tenants/acme/devices/plain/certificates/{fingerprint}", json={"state": "revoked"})
    assert r.status_code == 404 and r.json()["field"] == "fingerprint"
    r = await api.patch("/v1/tenants/acme/devices/kettle-42/certificates/00ff", json={"state": "revoked"})
    assert r.status_code == 404
    r = await api.patch(f"/v1/tenants/acme/devices/kettle-42/certificates/{fingerprint}", json={"state": "gone"})
    assert r.status_code == 422
    r = await api.get("/v1/tenants/nobody/devices/kettle-42/certificates")
    assert r.status_code == 404


# -- 3. password rotation ---------------------------------------------------------------------------------


async def test_rotating_a_password_closes_the_sessions_opened_with_the_old_one(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "old"}))
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p2", json={"password": "other"}))
    old, other, by_token = [await RawClient.open(gateway.ports["mqtt"]) for _ in range(3)]
    try:
        await old.send(connect_packet("a", "p1@acme", "old"))
        await other.send(connect_packet("b", "p2@acme", "other"))
        await by_token.send(connect_packet("c", token))
        for client in (old, other, by_token):
            assert await client.read_packet() == ACCEPTED
        await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "new"}))
        assert await old.closed_by_peer(1.0)
        assert await other.silent_for(0.2) and await by_token.silent_for(0.05)
    finally:
        for client in (old, other, by_token):
            await client.close()
    assert await connack(gateway.ports["mqtt"], connect_packet("a", "p1@acme", "old")) == REFUSED
    assert await connack(gateway.ports["mqtt"], connect_packet("a", "p1@acme", "new")) == ACCEPTED
    log = (await connection(api, "acme", "dev-1"))["log"]
    assert any(e["detail"] == "password changed" for e in log)


async def test_a_connect_racing_a_password_rotation_is_not_let_in(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """The connect re-checks, in the statement that records it, that the credential it verified is unchanged."""
    await make_device(api)
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "old"}))
    record = await gateway.registry.credentials.find_password("acme", "p1")
    assert record is not None
    await ok(api.put("/v1/tenants/acme/devices/dev-1/passwords/p1", json={"password": "new"}))
    # a session verified against the old credential row tries to record itself after the change
    recorded = await gateway.registry.connections.record_connect(
        session_key="acme/dev-1/race",
        tenant_id="acme",
        device_id="dev-1",
        node="test-node",
        client_id="race",
        remote_address="127.0.0.1",
        credential_id=record.credential_id,
        credential_version=record.version,
    )
    assert recorded is False
    assert (await connection(api, "acme", "dev-1"))["connected"] is False
