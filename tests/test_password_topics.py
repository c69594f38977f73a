"""Issue 17, a new user's rough edge: a device that authenticates with a password had no token of its
own, so it could use no topic (the CSV template's `password:` rows made exactly such devices).

A password device names itself in topics by its device id, as a certificate device does: setting its
password gives it a token bound to the device (= its device id), which names it in kp1 topics and
authenticates nothing on its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway
from registry import Registry
from registry.database import _migrations

from .conftest import make_device, mqtt, next_json, ok
from .test_device_imports import _import
from .test_events import collect, service_account
from .wire import connack, connect_packet

REFUSED = b"\x20\x02\x00\x05"


def kp1(extension: str, device_id: str, rest: str) -> str:
    return f"kp1/v1/{extension}/{device_id}/{rest}"


async def round_trips(client: aiomqtt.Client, device_id: str) -> None:
    """2/DCP data and a 10/EPMP write and read, each answered on the device's own topics."""
    await client.subscribe(kp1("dcx", device_id, "json/#"), qos=1)
    await client.subscribe(kp1("epmx", device_id, "#"), qos=1)
    await client.publish(kp1("dcx", device_id, "json/1"), b'[{"temperature": 21}]', qos=1)
    assert await next_json(client) == (kp1("dcx", device_id, "json/1/status"), None)
    await client.publish(kp1("epmx", device_id, "update/keys/2"), b'{"site": "kyiv"}', qos=1)
    assert await next_json(client) == (kp1("epmx", device_id, "update/keys/2/status"), None)
    await client.publish(kp1("epmx", device_id, "get/3"), b"", qos=1)
    assert await next_json(client) == (kp1("epmx", device_id, "get/3/status"), {"site": "kyiv"})


async def test_a_csv_password_row_device_publishes_data_and_does_epmp(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    job = await _import(api, "deviceId,appVersion,credential\nkettle-3,v1,password:kettle-3:change-me\n")
    assert (job["created"], job["failed"]) == (1, 0), job
    tokens = await ok(api.get("/v1/tenants/acme/devices/kettle-3/tokens"))
    assert [(t["token"], t["certificateBound"]) for t in tokens] == [("kettle-3", True)]
    app = await service_account(api)
    async with mqtt(gateway, app["username"], app["password"], client_id="app") as application:
        await application.subscribe("$gateway/data/acme/+/dcx", qos=1)
        async with mqtt(gateway, "kettle-3@acme", "change-me", client_id="k3") as device:
            await round_trips(device, "kettle-3")
        got = await collect(application, 1)
    assert [(topic, body["samples"]) for topic, body in got] == [
        ("$gateway/data/acme/kettle-3/dcx", [{"temperature": 21}])
    ]
    assert await gateway.registry.metadata.get("acme", "kettle-3") == {"site": "kyiv"}
    # the name is not a credential: without the password it opens nothing
    assert await connack(gateway.ports["mqtt"], connect_packet("spoof", "kettle-3")) == REFUSED


async def test_a_password_set_through_the_api_names_the_device_too(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "meter-7", "appVersion": "v1"}), 201)
    await ok(api.put("/v1/tenants/acme/devices/meter-7/passwords/m7", json={"password": "s3cret pass"}))
    async with mqtt(gateway, "m7@acme", "s3cret pass") as device:
        await round_trips(device, "meter-7")
    # rotating the password keeps the one token
    await ok(api.put("/v1/tenants/acme/devices/meter-7/passwords/m7", json={"password": "an0ther pass"}))
    tokens = await ok(api.get("/v1/tenants/acme/devices/meter-7/tokens"))
    assert [(t["token"], t["certificateBound"]) for t in tokens] == [("meter-7", True)]


async def test_a_device_id_that_is_another_devices_token_is_refused_a_password(api: httpx.AsyncClient) -> None:
    """Within a tenant every token names one device: a password device's name cannot be another's token."""
    taken = await make_device(api, "acme", "dev-1")  # generated: also a valid device id
    await ok(api.post("/v1/tenants/acme/devices", json={"id": taken}), 201)
    r = await api.put(f"/v1/tenants/acme/devices/{taken}/passwords/p1", json={"password": "s3cret pass"})
    assert r.status_code == 409 and "another device's endpoint token" in r.json()["message"], r.text
    assert await ok(api.get(f"/v1/tenants/acme/devices/{taken}/passwords")) == []
    also_taken = await make_device(api, "acme", "dev-2")
    job = await _import(api, f"deviceId,credential\n{also_taken},password:p2:pw\nfree-1,password:p3:pw\n")
    assert (job["created"], job["failed"]) == (1, 1), job
    assert "another device's endpoint token" in job["errors"][0]["message"] and job["errors"][0]["row"] == 2


async def test_the_migration_names_older_password_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry written before migration 0013: its password devices get their name; one whose id is
    another device's token keeps none (an operator issues it a token); bound tokens may repeat across
    tenants from then on, bearer tokens still may not."""
    path = tmp_path / "r.sqlite3"
    old = [m for m in _migrations() if m[0] <= 11]
    monkeypatch.setattr("registry.database._migrations", lambda: old)
    await (await Registry(path).open()).close()
    with sqlite3.connect(path) as db:  # rows as the schema-11 gateway wrote them
        db.executescript(
            """
            INSERT INTO tenants (id, created_at, updated_at) VALUES ('acme', 0, 0), ('globex', 0, 0);
            INSERT INTO devices (tenant_id, id, created_at, updated_at)
                VALUES ('acme', 'pw-1', 0, 0), ('acme', 'pw-2', 0, 0), ('acme', 'tok', 0, 0);
            INSERT INTO credentials (tenant_id, device_id, kind, auth_id, secret, state, created_at, updated_at)
                VALUES ('acme', 'pw-1', 'password', 'a1', 'h', 'active', 5, 5),
                       ('acme', 'pw-1', 'password', 'a2', 'h', 'active', 7, 7),
                       ('acme', 'pw-2', 'password', 'a3', 'h', 'active', 0, 0),
                       ('acme', 'tok', 'token', 'pw-2', NULL, 'active', 0, 0);
            """
        )
    monkeypatch.undo()
    reg = await Registry(path).open()
    try:
        assert await reg.credentials.usable_tokens("acme", "pw-1") == [("pw-1", True)]
        assert await reg.credentials.usable_tokens("acme", "pw-2") == []  # its id is `tok`'s token
        await reg.devices.import_devices("globex", ["pw-1"], with_tokens=True)  # the same name, elsewhere
        with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, created_at, updated_at)"
                " VALUES ('globex', 'pw-1', 'token', 'pw-2', 'active', 0, 0)"  # `tok`'s bearer token
            )
    finally:
        await reg.close()
