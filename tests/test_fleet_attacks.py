"""Issue 10: what an attack on groups, policies and the lifecycle found; each failed before its fix."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway
from registry import Registry
from registry.database import _migrations

from .conftest import make_device, ok
from .pki_helpers import make_ca, make_device_cert
from .test_x509 import ACCEPTED, add_ca, tls_connack
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet


async def _read_all(raw: RawClient) -> list[bytes]:
    """Every packet until a second of silence."""
    packets = []
    while True:
        try:
            packet = await raw.read_packet(timeout=1.0)
        except TimeoutError:
            return packets
        assert packet is not None
        packets.append(packet)


async def test_policy_pushes_do_not_multiply_with_the_topics_a_device_holds(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Each new filter used to push the policy to every status topic the session held (50 filters: 1,278
    pushes), and a policy change sent one copy per app version the device had made up."""
    token = await make_device(api)
    await ok(api.put("/v1/tenants/acme/groups/default/policy", json={"blob": "x" * 1000}))
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("d", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        for i in range(1, 21):
            await raw.send(subscribe_packet(i, f"kp1/av{i}/cmx/{token}/config/json/status"))
        packets = await _read_all(raw)
        assert sum(p[0] == 0x90 for p in packets) == 20
        assert sum(p[0] & 0xF0 == 0x30 for p in packets) == 20  # one per new subscription, not 210
        await ok(api.put("/v1/tenants/acme/groups/default/policy", json={"blob": "y"}))
        assert sum(p[0] & 0xF0 == 0x30 for p in await _read_all(raw)) == 1  # one copy per session
    finally:
        await raw.close()


async def test_auto_provisioning_does_not_reuse_a_deleted_devices_id(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "manual1"}), 201)
    await ok(api.delete("/v1/tenants/acme/devices/manual1"), 204)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "manual1")) != ACCEPTED
    assert (await api.get("/v1/tenants/acme/devices/manual1")).status_code == 404
    assert (await ok(api.get("/v1/metrics")))["connectsRefused"] == {"device_id_deleted": 1}
    # a new device is auto-provisioned as before, with its creation in its history
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "fresh")) == ACCEPTED
    history = await ok(api.get("/v1/tenants/acme/devices/fresh/history"))
    assert [(h["event"], h["detail"]["state"], h["detail"]["autoProvisioned"]) for h in history] == [
        ("created", "registered", True)
    ]


async def test_a_device_cannot_push_its_lifecycle_out_of_its_history(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    config_id = (await ok(api.get("/v1/tenants/acme/groups/default/policy")))["configId"]
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("d", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        for i in range(1, 301):
            body = json.dumps({"configId": config_id, "statusCode": 200 if i % 2 else 500}).encode()
            await raw.send(publish_packet(f"kp1/v1/cmx/{token}/applied/json", body, packet_id=i))
        acks = [p for p in await _read_all(raw) if p[0] == 0x40]
        assert len(acks) == 300
    finally:
        await raw.close()
    history = await ok(api.get("/v1/tenants/acme/devices/dev-1/history", params={"limit": 1000}))
    lifecycle = [(h["event"], h["detail"].get("state")) for h in history if h["event"] in ("created", "state-changed")]
    assert lifecycle == [("state-changed", "provisioned"), ("state-changed", "registered"), ("created", "enrolled")]
    assert len(history) == 103  # the newest 100 of 151 reports (a repeated apply is no news), the lifecycle apart


async def test_a_refused_patch_changes_nothing(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """PATCH {"state", "group": unknown} used to commit the state change and then answer 422."""
    await make_device(api)
    await gateway.registry.groups.record_applied(
        "acme", "dev-1", (await ok(api.get("/v1/tenants/acme/groups/default/policy")))["configId"], 200, None, node="n"
    )
    assert (await ok(api.get("/v1/tenants/acme/devices/dev-1")))["state"] == "provisioned"
    r = await api.patch("/v1/tenants/acme/devices/dev-1", json={"state": "registered", "group": "nope"})
    assert r.status_code == 422
    assert (await ok(api.get("/v1/tenants/acme/devices/dev-1")))["state"] == "provisioned"


async def test_migration_gives_old_devices_the_states_the_rules_would_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.sqlite3"
    old = [m for m in _migrations() if m[0] <= 6]
    monkeypatch.setattr("registry.database._migrations", lambda: old)
    reg = await Registry(path).open()
    await reg.close()
    with sqlite3.connect(path) as db:  # rows as the schema-6 gateway wrote them
        db.executescript(
            """
            INSERT INTO tenants (id, created_at, updated_at) VALUES ('acme', 0, 0);
            INSERT INTO devices (tenant_id, id, grp, state, auto_provisioned, created_at, updated_at)
                VALUES ('acme', 'bare', 'default', 'registered', 0, 0, 0),
                       ('acme', 'auto', 'kitchen', 'provisioned', 1, 0, 0),
                       ('acme', 'tok', 'default', 'registered', 0, 0, 0);
            INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, created_at, updated_at)
                VALUES ('acme', 'auto', 'x509', 'ab12', 'active', 0, 0),
                       ('acme', 'tok', 'token', 'tok-token', 'active', 0, 0);
            """
        )
    monkeypatch.undo()
    reg = await Registry(path).open()
    try:
        states = {d: (await reg.devices.get("acme", d)).state.value for d in ("bare", "auto", "tok")}
        assert states == {"bare": "enrolled", "auto": "registered", "tok": "registered"}
        assert [g.id for g in await reg.groups.of_tenant("acme")] == ["default", "kitchen"]
        assert [h.event for h in await reg.devices.history("acme", "auto")] == ["created"]
    finally:
        await reg.close()
