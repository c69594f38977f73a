"""Issue 4: 10/EPMP over 1/KP with real MQTT clients, pinning every rule of docs/kp1-epmp.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.auth.identity import DeviceIdentity
from gateway.kp1.epmp import Reply
from gateway.kp1.topic import Kp1Topic
from gateway.node.runtime import Gateway

from .conftest import api_client, make_device, ok, outbox_events, test_settings, wait_until
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet

WHITELIST = Path(__file__).parent.parent / "config" / "epmx-whitelist.example.yaml"
APPS = ("kettle_v1", "kettle_v2", "kettle_v3", "coffee_v1", "coffee_v2", "unknown_v9", "v1", "bad%name")


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
        timeout: float = 10.0,
    ) -> tuple[str, Any] | None:
        """('status'|'error', decoded body) or None when no answer came. The answer must be the next
        message: replies of one device come in request order, so a stray earlier reply fails here."""
        topic = await self.send(path, payload, req_id, app=app, qos=qos)
        try:
            message = await asyncio.wait_for(anext(aiter(self.client.messages)), timeout)
        except TimeoutError:
            return None
        kind = str(message.topic).rsplit("/", 1)[1]
        assert str(message.topic) == f"{topic}/{kind}", message.topic
        body = bytes(message.payload)  # type: ignore[arg-type]
        return kind, (json.loads(body) if body else None)

    async def send(
        self, path: str, payload: Any = b"", req_id: int | str | None = None, *, app: str | None = None, qos: int = 0
    ) -> str:
        """Publishes a request without waiting for anything; returns its topic."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        topic = f"kp1/{app or self.app}/epmx/{self.token}{path}" + (f"/{req_id}" if req_id is not None else "")
        await self.client.publish(topic, data, qos=qos)
        return topic


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
    await dev.send("/update/keys", {"k": 1}, req_id=req_id)
    # the next answer is the read's (any reply to the first request would come before it), and the level is
    # part of the resource path then, so nothing was written either
    assert await dev.request("/get") == ("status", {})


async def test_largest_request_id_and_no_id_still_writes(dev: Device) -> None:
    assert await dev.request("/get", req_id=2**31 - 1) == ("status", {})
    await dev.send("/update/keys", {"quiet": True}, req_id=None)
    assert await dev.request("/get") == ("status", {"quiet": True})  # the next answer: the write had none


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

        await wait_until(all_there, timeout=30)
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


async def make_unversioned_device(admin: httpx.AsyncClient, tenant: str, device: str) -> str:
    """A device registered without an app version; returns its token."""
    r = await admin.post("/v1/tenants", json={"id": tenant})
    assert r.status_code in (201, 409), r.text
    await ok(admin.post(f"/v1/tenants/{tenant}/devices", json={"id": device}), 201)
    return str((await ok(admin.post(f"/v1/tenants/{tenant}/devices/{device}/tokens"), 201))["token"])


async def app_version_of(admin: httpx.AsyncClient, device: str, tenant: str = "acme") -> str | None:
    return (await ok(admin.get(f"/v1/tenants/{tenant}/devices/{device}")))["appVersion"]  # type: ignore[no-any-return]


async def app_version_events(gw: Gateway, tenant: str = "acme") -> list[dict[str, Any]]:
    return [e["payload"] for e in await outbox_events(gw, tenant, "endpoint/lifecycle/appversion-updated")]


def phrase(reply: tuple[str, Any] | None) -> str:
    assert reply is not None and reply[0] == "error", reply
    return str(reply[1]["reasonPhrase"])


async def test_a_downgrade_through_the_topic_is_refused(gw: Gateway, admin: httpx.AsyncClient) -> None:
    """The attack: a kettle_v2 device, whose whitelist makes `owner` read-only, writes `owner` by naming
    kettle_v1 (unrestricted, registered before kettle_v2) in its topic."""
    client, dev = await connect(gw, admin, "kettle-9", "kettle_v2")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/kettle-9/metadata", json={"owner": "alice", "secret": 1}))
        assert await dev.request("/update/keys", {"owner": "mallory"}) == error(403)
        reply = await dev.request("/update/keys", {"owner": "mallory"}, app="kettle_v1")
        assert reply == error(403) and "kettle_v1" in phrase(reply) and "older" in phrase(reply)
        assert await dev.request("/update", {"owner": "mallory"}, app="kettle_v1") == error(403)
        assert await dev.request("/delete/keys", ["owner"], app="kettle_v1") == error(403)
        assert await dev.request("/get", app="kettle_v1") == error(403)  # nor a read under kettle_v1's rules
        assert await gw.registry.metadata.get("acme", "kettle-9") == {"owner": "alice", "secret": 1}
        assert await app_version_of(admin, "kettle-9") == "kettle_v2"
        assert await app_version_events(gw) == []
        assert await dev.request("/get") == ("status", {"owner": "alice"})  # still served as kettle_v2
    finally:
        await client.__aexit__(None, None, None)


async def test_a_move_to_a_later_version_is_recorded_with_an_event(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "kettle-9", "kettle_v2")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/kettle-9/metadata", json={"owner": "alice", "secret": 1}))
        # kettle_v3 was registered after kettle_v2: allowed, and served under kettle_v3's rules
        assert await dev.request("/get", app="kettle_v3") == ("status", {"owner": "alice", "secret": 1})
        assert await app_version_of(admin, "kettle-9") == "kettle_v3"
        (event,) = await app_version_events(gw)
        assert event["appVersionName"] == "kettle_v3" and event["previousAppVersionName"] == "kettle_v2"
        assert event["endpointId"] == "kettle-9"
        assert {"correlationId", "timestamp", "originatorReplicaId"} <= set(event)
        assert await dev.request("/update/keys", {"owner": "bob"}, app="kettle_v3") == OK_EMPTY
        # and there is no way back, not even to the version it came from
        assert await dev.request("/get", app="kettle_v2") == error(403)
        assert await dev.request("/update/keys", {"owner": "eve"}, app="kettle_v1") == error(403)
        assert await app_version_of(admin, "kettle-9") == "kettle_v3"
        assert len(await app_version_events(gw)) == 1
        assert await gw.registry.metadata.get("acme", "kettle-9") == {"owner": "bob", "secret": 1}
    finally:
        await client.__aexit__(None, None, None)


async def test_an_allowed_move_is_recorded_before_the_request_is_served(gw: Gateway, admin: httpx.AsyncClient) -> None:
    """The request's own events carry the new version; a payload refused after an allowed move keeps the move."""
    client, dev = await connect(gw, admin, "kettle-7", "kettle_v1")
    try:
        assert await dev.request("/update/keys", {"owner": "alice"}, app="kettle_v2") == error(403)  # its rules
        assert await app_version_of(admin, "kettle-7") == "kettle_v2"
        assert await dev.request("/update/keys", {"location": "hall"}, app="kettle_v2") == OK_EMPTY
        (updated,) = await outbox_events(gw, "acme", "endpoint/metadata/updated")
        assert updated["payload"]["appVersionName"] == "kettle_v2"
    finally:
        await client.__aexit__(None, None, None)


async def test_app_version_changes_none_forbids_any_move(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "coffee-1", "coffee_v1")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/coffee-1/metadata", json={"location": "hall", "secret": 1}))
        reply = await dev.request("/get", app="coffee_v2")  # later, but coffee_machine says `none`
        assert reply == error(403) and "coffee_machine" in phrase(reply)
        assert await dev.request("/update/keys", {"location": "x"}, app="coffee_v2") == error(403)
        assert await app_version_of(admin, "coffee-1") == "coffee_v1"
        assert await app_version_events(gw) == []
        assert await dev.request("/get") == ("status", {"location": "hall"})
        # operators still move it; then the device is held to its new version
        await ok(admin.patch("/v1/tenants/acme/devices/coffee-1", json={"appVersion": "coffee_v2"}))
        assert await dev.request("/get", app="coffee_v2") == ("status", {"location": "hall", "secret": 1})
        assert await dev.request("/get", app="coffee_v1") == error(403)
        assert await gw.registry.metadata.get("acme", "coffee-1") == {"location": "hall", "secret": 1}
    finally:
        await client.__aexit__(None, None, None)


async def test_another_applications_version_or_an_unknown_one_is_404(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "kettle-9", "kettle_v2")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/kettle-9/metadata", json={"owner": "alice", "secret": 1}))
        # coffee_v2 is unrestricted: another application's version cannot be used to escape kettle_v2's whitelist
        assert await dev.request("/update/keys", {"owner": "x"}, app="coffee_v2") == error(404)
        assert await dev.request("/get", app="coffee_v1") == error(404)
        assert await dev.request("/update/keys", {"owner": "x"}, app="unknown_v9") == error(404)
        assert await app_version_of(admin, "kettle-9") == "kettle_v2"
        assert await app_version_events(gw) == []
        assert await gw.registry.metadata.get("acme", "kettle-9") == {"owner": "alice", "secret": 1}
    finally:
        await client.__aexit__(None, None, None)


async def connect_unversioned(gw: Gateway, admin: httpx.AsyncClient, device: str, tenant: str = "acme") -> Device:
    token = await make_unversioned_device(admin, tenant, device)
    client = aiomqtt.Client("127.0.0.1", gw.ports["mqtt"], username=token, identifier=device)
    await client.__aenter__()
    for version in APPS:
        await client.subscribe(f"kp1/{version}/epmx/{token}/#", qos=1)
    return Device(client, token, "v1")


async def test_a_device_without_app_version_claims_nothing_looser_than_the_default(
    gw: Gateway, admin: httpx.AsyncClient
) -> None:
    """acme gets the file's `default` (location read-write, owner read-only); globex its own (location only)."""
    blank = await connect_unversioned(gw, admin, "blank")
    stricter = await connect_unversioned(gw, admin, "blank-2")
    foreign = await connect_unversioned(gw, admin, "blank-3", tenant="globex")
    try:
        await ok(admin.put("/v1/tenants/acme/devices/blank/metadata", json={"owner": "alice", "secret": 1}))
        # kettle_v1 and kettle_v3 let it write owner and read secret: looser than the default
        reply = await blank.request("/update/keys", {"owner": "mallory"}, app="kettle_v1")
        assert reply == error(403) and "default" in phrase(reply)
        assert await blank.request("/get", app="kettle_v3") == error(403)
        assert await blank.request("/get", app="unknown_v9") == error(404)
        assert await app_version_of(admin, "blank") is None
        assert await app_version_events(gw) == []
        assert await gw.registry.metadata.get("acme", "blank") == {"owner": "alice", "secret": 1}
        # kettle_v2 is exactly the default: claimed and recorded; from there only forward
        assert await blank.request("/get", app="kettle_v2") == ("status", {"owner": "alice"})
        assert await app_version_of(admin, "blank") == "kettle_v2"
        (event,) = await app_version_events(gw)
        assert event["previousAppVersionName"] is None and event["appVersionName"] == "kettle_v2"
        assert await blank.request("/get", app="kettle_v1") == error(403)
        # stricter than the default (location read-only): allowed, also from an application that says `none`,
        # since a first claim is not a move
        assert await stricter.request("/get/keys", app="coffee_v1") == ("status", [])
        assert await app_version_of(admin, "blank-2") == "coffee_v1"
        assert await stricter.request("/get", app="coffee_v2") == error(403)
        # globex's default reads only location: kettle_v2 (owner readable) is looser there, coffee_v1 is not
        assert await foreign.request("/get", app="kettle_v2") == error(403)
        assert await app_version_of(admin, "blank-3", "globex") is None
        assert await foreign.request("/update/keys", {"location": "x"}, app="coffee_v1") == error(403)  # its rules
        assert await app_version_of(admin, "blank-3", "globex") == "coffee_v1"
    finally:
        for device in (blank, stricter, foreign):
            await device.client.__aexit__(None, None, None)


async def test_a_version_the_whitelist_does_not_list_is_served_under_the_default(
    gw: Gateway, admin: httpx.AsyncClient
) -> None:
    client, dev = await connect(gw, admin, "legacy", "v1")  # registered with a version the file does not list
    try:
        await ok(admin.put("/v1/tenants/acme/devices/legacy/metadata", json={"owner": "alice", "secret": 1}))
        assert await dev.request("/get") == ("status", {"owner": "alice"})
        assert await dev.request("/update/keys", {"owner": "mallory"}) == error(403)
        assert await dev.request("/update/keys", {"location": "hall"}) == OK_EMPTY
        assert await dev.request("/get", app="kettle_v1") == error(403)  # looser than the default
        assert await dev.request("/get", app="kettle_v2") == ("status", {"location": "hall", "owner": "alice"})
        assert await app_version_of(admin, "legacy") == "kettle_v2"
    finally:
        await client.__aexit__(None, None, None)


async def test_without_a_whitelist_any_valid_version_is_recorded(gateway: Gateway, api: httpx.AsyncClient) -> None:
    client, dev = await connect(gateway, api, "free", "kettle_v2")
    try:
        assert await dev.request("/update/keys", {"owner": "x"}, app="kettle_v1") == OK_EMPTY
        assert await app_version_of(api, "free") == "kettle_v1"
        assert await dev.request("/get", app="unknown_v9") == ("status", {"owner": "x"})
        assert await app_version_of(api, "free") == "unknown_v9"
        assert [e["appVersionName"] for e in await app_version_events(gateway)] == ["kettle_v1", "unknown_v9"]
        assert await dev.request("/get", app="bad%name") == error(404)  # not an app version name at all
        assert await app_version_of(api, "free") == "unknown_v9"
    finally:
        await client.__aexit__(None, None, None)


async def test_reload_refuses_a_bad_app_version_changes_setting(gw: Gateway, admin: httpx.AsyncClient) -> None:
    client, dev = await connect(gw, admin, "kettle-9", "kettle_v2")
    whitelist = gw.settings.epmx_whitelist
    assert whitelist is not None
    try:
        original = whitelist.read_text()
        whitelist.write_text(original.replace("app-version-changes: forward", "app-version-changes: backward"))
        r = await admin.post("/v1/epmx/whitelist/reload")
        assert r.status_code == 422, r.text
        assert "app-version-changes" in r.json()["message"] and "'backward'" in r.json()["message"]
        assert await dev.request("/get", app="kettle_v1") == error(403)  # the previous whitelist stays
        whitelist.write_text(original.replace("app-version-changes: forward", "app-version-change: none"))
        r = await admin.post("/v1/epmx/whitelist/reload")  # a misspelt setting is not silently ignored
        assert r.status_code == 422 and "app-version-change" in r.json()["message"], r.text
        whitelist.write_text(original.replace("app-version-changes: forward", "app-version-changes: none"))
        await ok(admin.post("/v1/epmx/whitelist/reload"))
        assert await dev.request("/get", app="kettle_v3") == error(403)  # same session, new rule
        assert await app_version_of(admin, "kettle-9") == "kettle_v2"
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
        assert await a.request("/get", req_id=2) == ("status", {})  # only a's own answer
        assert await gw.registry.metadata.get("globex", "dev-b") == {"private": 1}
        # b's next message is the answer to its own request: nothing reached it before
        assert await b.request("/get") == ("status", {"private": 1})
    finally:
        await c1.__aexit__(None, None, None)
        await c2.__aexit__(None, None, None)


async def test_request_flood_is_bounded_and_others_are_served(
    gw: Gateway, admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 requests from one device: `epmp_max_pending` (100) of its session wait, every later one is
    dropped, and another device is served while all 100 still wait. The noisy device's requests are held at
    a gate in front of the real handler until then, so nothing depends on how fast the gateway reads the
    flood compared with how fast it answers it."""
    epmp = gw.services.epmp
    assert epmp is not None
    gate = asyncio.Event()
    serve = epmp.handle

    async def gated(identity: DeviceIdentity, request: Kp1Topic, payload: bytes) -> Reply | None:
        if identity.device_id == "noisy":
            await gate.wait()
        return await serve(identity, request, payload)

    monkeypatch.setattr(epmp, "handle", gated)

    async def metric(name: str) -> Any:
        return (await ok(admin.get("/v1/metrics")))[name]

    async def metric_becomes(name: str, expected: Any, timeout: float) -> None:
        """Waits for a counter to reach `expected`; on timeout the assert shows where it stopped."""

        async def reached() -> bool:
            return bool(await metric(name) == expected)

        with contextlib.suppress(AssertionError):
            await wait_until(reached, timeout)
        assert await metric(name) == expected

    c_ok, quiet = await connect(gw, admin, "quiet", "kettle_v1")
    token = await make_device(admin, "acme", "noisy", app_version="kettle_v1")
    raw = await RawClient.open(gw.ports["mqtt"])
    try:
        await raw.send(
            connect_packet("noisy", token, keepalive=0) + subscribe_packet(1, f"kp1/kettle_v1/epmx/{token}/#")
        )
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        assert (await raw.read_packet() or b"")[0] == 0x90  # SUBACK
        topic = f"kp1/kettle_v1/epmx/{token}/update/keys"
        await raw.send(b"".join(publish_packet(topic, json.dumps({"n": i}).encode()) for i in range(10_000)))
        assert await quiet.request("/get/keys") == ("status", [])  # whether the flood is still being read or not

        await metric_becomes("epmpDropped", 10_000 - 100, timeout=120)  # all read: 100 wait, the rest dropped
        assert await quiet.request("/update/keys", {"still": "served"}) == OK_EMPTY  # and while they wait
        assert await metric("epmpRequests") == {"/get/keys": 1, "/update/keys": 1}
        gate.set()

        await metric_becomes("epmpRequests", {"/get/keys": 1, "/update/keys": 1 + 100}, timeout=60)
        # exactly the first 100, in order; and the noisy session itself is still served
        await raw.send(publish_packet(f"kp1/kettle_v1/epmx/{token}/get/1", b""))
        reply = await raw.read_packet(timeout=10)
        assert reply is not None and f"{topic.removesuffix('/update/keys')}/get/1/status".encode() in reply
        assert reply.endswith(b'{"n":99}')
        assert await metric("epmpDropped") == 9_900
    finally:
        gate.set()
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
