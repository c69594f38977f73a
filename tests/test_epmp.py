"""Issue 4: 10/EPMP over 1/KP with real MQTT clients, pinning every rule of ../shared/spec/kp1-epmp.md."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.runtime import Gateway

from .conftest import api_client, make_device, ok, outbox_events, test_settings
from .wire import RawClient, connect_packet, publish_packet

WHITELIST = Path(__file__).parent.parent / "config" / "epmx-whitelist.example.yaml"
APPS = ("kettle_v1", "kettle_v2", "kettle_v3", "coffee_v1", "unknown_v9")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    whitelist = tmp_path / "whitelist.yaml"
    shutil.copy(WHITELIST, whitelist)
    gateway = Gateway(
        test_settings(
            tmp_path / "data",
            epmx_whitelist=whitelist,
            epmp_max_keys=8,
            epmp_max_value_bytes=256,
            epmp_max_key_length=32,
            epmp_max_payload_bytes=4096,
        )
    )
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(gw) as client:
        yield client


class Device:
    def __init__(self, client: aiomqtt.Client, token: str, app: str) -> None:
        self.client, self.token, self.app = client, token, app

    async def request(
        self,
        path: str,
        payload: Any = b"",
        req_id: int | str | None = 1,
        *,
        app: str | None = None,
        qos: int = 0,
        timeout: float = 3.0,
    ) -> tuple[str, Any] | None:
        """('status'|'error', decoded body) or None when no answer came."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        topic = f"kp1/{app or self.app}/epmx/{self.token}{path}" + (f"/{req_id}" if req_id is not None else "")
        await self.client.publish(topic, data, qos=qos)
        try:
            message = await asyncio.wait_for(anext(aiter(self.client.messages)), timeout)
        except TimeoutError:
            return None
        kind = str(message.topic).rsplit("/", 1)[1]
        assert str(message.topic) == f"{topic}/{kind}", message.topic
        body = bytes(message.payload)  # type: ignore[arg-type]
        return kind, (json.loads(body) if body else None)


async def connect(
    gw: Gateway, admin: httpx.AsyncClient, device: str = "kettle-1", app: str = "kettle_v1", tenant: str = "acme"
) -> tuple[aiomqtt.Client, Device]:
    token = await make_device(admin, tenant, device, app_version=app)
    client = aiomqtt.Client("127.0.0.1", gw.ports["mqtt"], username=token, identifier=device)
    await client.__aenter__()
    for version in APPS:
        await client.subscribe(f"kp1/{version}/epmx/{token}/#", qos=1)
    return client, Device(client, token, app)


@pytest.fixture
async def dev(gw: Gateway, admin: httpx.AsyncClient) -> AsyncIterator[Device]:
    client, device = await connect(gw, admin)
    try:
        yield device
    finally:
        await client.__aexit__(None, None, None)


def error(status: int) -> Any:
    class _Err:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, tuple)
                and other[0] == "error"
                and other[1]["statusCode"] == status
                and set(other[1]) == {"statusCode", "reasonPhrase"}
                and isinstance(other[1]["reasonPhrase"], str)
            )

        def __repr__(self) -> str:
            return f"error({status})"

    return _Err()


OK_EMPTY = ("status", None)


# -- resources ---------------------------------------------------------------------------------


async def test_round_trip_of_every_resource(dev: Device) -> None:
    assert await dev.request("/get/keys") == ("status", [])
    assert await dev.request("/get") == ("status", {})
    assert await dev.request("/update", {"a": 1, "b": {"x": [1, 2]}, "c": "s"}) == OK_EMPTY
    assert await dev.request("/get/keys") == ("status", ["a", "b", "c"])
    assert await dev.request("/get", {"keys": ["a", "b", "zz"]}) == ("status", {"a": 1, "b": {"x": [1, 2]}})
    assert await dev.request("/get", {}) == ("status", {"a": 1, "b": {"x": [1, 2]}, "c": "s"})
    # partial update replaces top-level keys, no deep merge
    assert await dev.request("/update/keys", {"b": {"y": 3}, "d": None}) == OK_EMPTY
    assert await dev.request("/get") == ("status", {"a": 1, "b": {"y": 3}, "c": "s", "d": None})
    # full replace removes keys missing from the payload
    assert await dev.request("/update", {"a": 2}) == OK_EMPTY
    assert await dev.request("/get") == ("status", {"a": 2})
    assert await dev.request("/delete/keys", ["a", "absent"]) == OK_EMPTY  # deleting an absent key: no-op
    assert await dev.request("/get") == ("status", {})


@pytest.mark.parametrize("req_id", ["0", "-1", "2147483648", "99999999999999999999", "007", "1e3"])
async def test_not_a_request_id_means_no_reply(dev: Device, req_id: str) -> None:
    assert await dev.request("/update/keys", {"k": 1}, req_id=req_id, timeout=0.7) is None
    # the level is part of the resource path then, so nothing was written either
    assert await dev.request("/get") == ("status", {})


async def test_largest_request_id_and_no_id_still_writes(dev: Device) -> None:
    assert await dev.request("/get", req_id=2**31 - 1) == ("status", {})
    assert await dev.request("/update/keys", {"quiet": True}, req_id=None, timeout=0.7) is None
    assert await dev.request("/get") == ("status", {"quiet": True})


async def test_reply_comes_at_the_request_qos(dev: Device) -> None:
    topic = f"kp1/kettle_v1/epmx/{dev.token}/get/keys/5"
    await dev.client.publish(topic, b"", qos=1)
    message = await asyncio.wait_for(anext(aiter(dev.client.messages)), 3)
    assert str(message.topic) == topic + "/status" and message.qos == 1


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/update", b"\xff\xfe not utf-8"),
        ("/update", b'{"a": 1, "a": 2}'),
        ("/update", b"[" * 1000 + b"]" * 1000),
        ("/update", b"{not json"),
        ("/update", b"{}"),
        ("/update", b"[1, 2]"),
        ("/update/keys", b'{"has space": 1}'),
        ("/update/keys", '{"ünï": 1}'.encode()),
        ("/get", b'{"keys": "a"}'),
        ("/get", b'{"keys": [1, 2]}'),
        ("/get", b'{"keys": ["a", "a"]}'),
        ("/get", b'{"keys": ["a"], "more": 1}'),
        ("/delete/keys", b'"a"'),
        ("/delete/keys", b"[]"),
        ("/delete/keys", b'[{"a": 1}]'),
    ],
)
async def test_malformed_payloads_are_400(dev: Device, path: str, payload: bytes) -> None:
    await dev.request("/update", {"keep": 1})
    assert await dev.request(path, payload) == error(400)
    assert await dev.request("/get") == ("status", {"keep": 1})


@pytest.mark.parametrize("path", ["", "/", "/get/", "/update/keys/", "/nope", "/get/keys/extra", "//get"])
async def test_unknown_resource_is_404(dev: Device, path: str) -> None:
    assert await dev.request(path, b"") == error(404)


# -- limits --------------------------------------------------------------------------------------


async def test_limits_are_413_and_nothing_is_written(dev: Device) -> None:
    await dev.request("/update", {"base": 1})
    for payload in (
        {f"k{i}": i for i in range(9)},  # 9 keys > 8
        {"big": "x" * 300},  # value over 256 bytes
        {"k" * 33: 1},  # key longer than 32
    ):
        assert await dev.request("/update/keys", payload) == error(413)
    assert await dev.request("/update/keys", b'{"p": "' + b"x" * 5000 + b'"}') == error(413)  # payload > 4096
    assert await dev.request("/get") == ("status", {"base": 1})


async def test_ten_megabyte_payload_closes_the_connection(gw: Gateway, admin: httpx.AsyncClient) -> None:
    token = await make_device(admin, "acme", "big", app_version="kettle_v1")
    raw = await RawClient.open(gw.ports["mqtt"])
    try:
        await raw.send(connect_packet("big", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        raw.writer.write(publish_packet(f"kp1/kettle_v1/epmx/{token}/update/1", b"x" * 10_000_000))
        assert await raw.closed_by_peer(3.0)  # over max_packet_bytes: refused on the header
    finally:
        await raw.close()


async def test_concurrent_partial_updates_lose_nothing(gw: Gateway, admin: httpx.AsyncClient) -> None:
    (c1, d1) = await connect(gw, admin, "multi", "kettle_v1")
    token = d1.token
    c2 = aiomqtt.Client("127.0.0.1", gw.ports["mqtt"], username=token, identifier="second")
    await c2.__aenter__()
    try:
        topic = f"kp1/kettle_v1/epmx/{token}/update/keys"
        await asyncio.gather(
            *((c1 if i % 2 else c2).publish(topic, json.dumps({f"k{i}": i}).encode(), qos=1) for i in range(8))
        )

        async def all_there() -> bool:
            return len(await gw.registry.metadata.get("acme", "multi")) == 8

        for _ in range(100):
            if await all_there():
                break
            await asyncio.sleep(0.05)
        assert await gw.registry.metadata.get("acme", "multi") == {f"k{i}": i for i in range(8)}
    finally:
        await c2.__aexit__(None, None, None)
        await c1.__aexit__(None, None, None)


# -- whitelisting --------------------------------------------------------------------------------


async def test_whitelist_read_only_and_invisible_keys(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "kettle-2", "kettle_v2")
    try:
        # an operator sets keys the device may not write, or even see
        await ok(
            admin.put(
                "/v1/tenants/acme/devices/kettle-2/metadata",
                json={"owner": "alice", "location": "hall", "secret": "s3"},
            )
        )
        assert await dev.request("/get/keys") == ("status", ["location", "owner"])  # 'secret' silently omitted
        assert await dev.request("/get") == ("status", {"location": "hall", "owner": "alice"})
        assert await dev.request("/get", {"keys": ["secret"]}) == error(403)
        assert await dev.request("/update/keys", {"owner": "mallory"}) == error(403)
        assert await dev.request("/update/keys", {"secret": "x"}) == error(403)
        assert await dev.request("/delete/keys", ["owner"]) == error(403)
        assert await dev.request("/update/keys", {"unlisted": 1}) == error(403)
        # full replace touches only what the device may write
        assert await dev.request("/update", {"location": "kitchen"}) == OK_EMPTY
        assert await gw.registry.metadata.get("acme", "kettle-2") == {
            "location": "kitchen",
            "owner": "alice",
            "secret": "s3",
        }
        assert await dev.request("/delete/keys", ["location"]) == OK_EMPTY
        assert await gw.registry.metadata.get("acme", "kettle-2") == {"owner": "alice", "secret": "s3"}
    finally:
        await client.__aexit__(None, None, None)


async def test_whitelist_reload_keeps_sessions(gw: Gateway, admin: httpx.AsyncClient, dev: Device) -> None:
    assert await dev.request("/update/keys", {"anything": 1}) == OK_EMPTY
    assert gw.settings.epmx_whitelist is not None
    gw.settings.epmx_whitelist.write_text(
        "applications:\n  smart_kettle:\n    versions:\n      kettle_v1:\n        metadata-keys:\n"
        "          location: {}\n"
    )
    reloaded = await ok(admin.post("/v1/epmx/whitelist/reload"))
    assert reloaded == {"appVersions": ["kettle_v1"]}
    assert await dev.request("/update/keys", {"anything": 2}) == error(403)  # same session, new rules
    assert await dev.request("/get/keys") == ("status", [])
    gw.settings.epmx_whitelist.write_text("applications: [broken")
    r = await admin.post("/v1/epmx/whitelist/reload")
    assert r.status_code == 422  # the old whitelist stays in force
    assert await dev.request("/update/keys", {"location": "x"}) == OK_EMPTY


# -- app versions ------------------------------------------------------------------------------


async def test_app_versions(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "kettle-9", "kettle_v2")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/kettle-9/metadata", json={"secret": 1}))
        # another application's version cannot be used to escape kettle_v2's whitelist
        assert await dev.request("/get", app="coffee_v1") == error(404)
        assert await dev.request("/get", app="unknown_v9") == error(404)
        assert (await ok(admin.get("/v1/tenants/acme/devices/kettle-9")))["appVersion"] == "kettle_v2"
        # a known version of its own application: recorded, with an event
        assert await dev.request("/get", app="kettle_v1") == ("status", {"secret": 1})
        assert (await ok(admin.get("/v1/tenants/acme/devices/kettle-9")))["appVersion"] == "kettle_v1"
        events = await outbox_events(gw, "acme")
        updated = [e for e in events if e["subject"].endswith("/appversion-updated")]
        assert len(updated) == 1 and updated[0]["payload"]["previousAppVersionName"] == "kettle_v2"
        assert updated[0]["payload"]["appVersionName"] == "kettle_v1"
        assert {"correlationId", "timestamp", "originatorReplicaId"} <= set(updated[0]["payload"])
    finally:
        await client.__aexit__(None, None, None)


# -- isolation -------------------------------------------------------------------------------------


async def test_token_of_another_device_is_never_answered(gw: Gateway, admin: httpx.AsyncClient) -> None:
    c1, a = await connect(gw, admin, "dev-a", "kettle_v1")
    c2, b = await connect(gw, admin, "dev-b", "kettle_v1", tenant="globex")
    try:
        await ok(admin.put("/v1/tenants/globex/devices/dev-b/metadata", json={"private": 1}))
        for path, payload in (("/get", b""), ("/update", b'{"x": 1}'), ("/delete/keys", b'["private"]')):
            await a.client.publish(f"kp1/kettle_v1/epmx/{b.token}{path}/1", payload, qos=1)
        assert await a.request("/get", req_id=2, timeout=1) == ("status", {})  # only a's own answer
        assert await gw.registry.metadata.get("globex", "dev-b") == {"private": 1}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(b.client.messages)), 0.5)
    finally:
        await c1.__aexit__(None, None, None)
        await c2.__aexit__(None, None, None)


async def test_request_flood_is_bounded_and_others_are_served(gw: Gateway, admin: httpx.AsyncClient) -> None:
    c_ok, quiet = await connect(gw, admin, "quiet", "kettle_v1")
    token = await make_device(admin, "acme", "noisy", app_version="kettle_v1")
    raw = await RawClient.open(gw.ports["mqtt"])
    try:
        await raw.send(connect_packet("noisy", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        packet = publish_packet(f"kp1/kettle_v1/epmx/{token}/update/keys", b'{"n": 1}')
        raw.writer.write(packet * 10_000)
        start = asyncio.get_running_loop().time()
        assert await quiet.request("/get/keys") == ("status", [])
        assert asyncio.get_running_loop().time() - start < 3.0
        metrics = await ok(admin.get("/v1/metrics"))
        assert metrics["epmpDropped"] > 0
    finally:
        await raw.close()
        await c_ok.__aexit__(None, None, None)


# -- operators ----------------------------------------------------------------------------------


async def test_operator_metadata_api(gw: Gateway, admin: httpx.AsyncClient) -> None:
    await make_device(admin, "acme", "op", app_version="kettle_v2")
    base = "/v1/tenants/acme/devices/op/metadata"
    assert await ok(admin.get(base)) == {}
    assert await ok(admin.put(base, json={"owner": "x", "secret": [1]})) == {"owner": "x", "secret": [1]}
    assert await ok(admin.patch(base, json={"owner": "y"})) == {"owner": "y", "secret": [1]}
    assert await ok(admin.delete(base, params={"keys": "owner,absent"})) == {"secret": [1]}
    r = await admin.patch(base, content=b'{"a": 1, "a": 2}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await admin.patch(base, json={"bad key": 1})
    assert r.status_code == 422
    r = await admin.patch(base, json={f"k{i}": i for i in range(9)})
    assert r.status_code == 413
    assert (await admin.get("/v1/tenants/acme/devices/nope/metadata")).status_code == 404
    events = await outbox_events(gw, "acme", "endpoint/metadata/updated")
    assert [sorted(e["payload"]["added"]) for e in events] == [["owner", "secret"], [], []]
    assert events[1]["payload"]["updated"] == {"owner": {"oldValue": '"x"', "newValue": '"y"'}}
    assert events[2]["payload"]["removed"] == {"owner": '"y"'}
    assert all(e["payload"]["endpointId"] == "op" and e["payload"]["appVersionName"] == "kettle_v2" for e in events)


async def test_registry_failure_is_500_without_internals(
    gw: Gateway, dev: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk /var/secret/path is on fire")

    monkeypatch.setattr(gw.registry.metadata, "get", broken)
    reply = await dev.request("/get")
    assert reply == error(500)
    assert reply is not None and "secret" not in json.dumps(reply[1]) and reply[1]["reasonPhrase"] == "internal error"


async def test_a_read_after_a_write_from_another_session_sees_it(gw: Gateway, admin: httpx.AsyncClient) -> None:
    """What the README's mosquitto_pub round trip does: write from one connection, read from the next."""
    client, reader = await connect(gw, admin, "ordered", "kettle_v1")
    try:
        for i in range(20):
            raw = await RawClient.open(gw.ports["mqtt"])
            await raw.send(connect_packet(f"writer{i}", reader.token))
            assert await raw.read_packet() == b"\x20\x02\x00\x00"
            topic = f"kp1/kettle_v1/epmx/{reader.token}/update/keys"
            await raw.send(publish_packet(topic, json.dumps({"n": i}).encode(), packet_id=7))
            assert await raw.read_packet() == b"\x40\x02\x00\x07"  # PUBACK: the gateway has the request
            await raw.send(b"\xe0\x00")
            await raw.close()
            assert await reader.request("/get", req_id=i + 1) == ("status", {"n": i})
    finally:
        await client.__aexit__(None, None, None)
