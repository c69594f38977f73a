"""Issue 9, northbound: 2/DCP data from devices to their tenant's applications, by device id."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_message, ok
from .test_events import collect, service_account
from .wire import RawClient, connect_packet, granted

DATA = "$gateway/data/acme/+/dcx"


async def _reply(device: aiomqtt.Client, timeout: float = 3.0) -> tuple[str, bytes]:
    message = await next_message(device, timeout)
    assert message is not None, "no reply"
    return str(message.topic), bytes(message.payload)  # type: ignore[arg-type]


def _error(payload: bytes) -> tuple[int, str]:
    body = json.loads(payload)
    assert set(body) == {"statusCode", "reasonPhrase"}, body
    return body["statusCode"], body["reasonPhrase"]


async def test_samples_reach_the_tenants_application_by_device_id_and_nothing_of_another_tenant(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api, "acme", "kettle-1", "kettle_v1")
    globex_token = await make_device(api, "globex", "g-1")
    acme = await service_account(api)
    globex = await service_account(api, "globex", "g")
    async with (
        mqtt(gateway, acme["username"], acme["password"], client_id="a") as acme_app,
        mqtt(gateway, globex["username"], globex["password"], client_id="g") as globex_app,
        mqtt(gateway, token) as kettle,
        mqtt(gateway, globex_token) as g1,
    ):
        await acme_app.subscribe(DATA, qos=1)
        await globex_app.subscribe("$gateway/data/globex/#", qos=1)
        await kettle.subscribe(f"kp1/kettle_v1/dcx/{token}/#", qos=1)
        await kettle.publish(f"kp1/kettle_v1/dcx/{token}/json/1", b'{"temperature": 21.5}', qos=1)
        assert await _reply(kettle) == (f"kp1/kettle_v1/dcx/{token}/json/1/status", b"")
        await kettle.publish(f"kp1/kettle_v1/dcx/{token}/json", b'[{"t": 1}, {"t": 2, "nested": {"a": [1]}}]', qos=0)
        got = await collect(acme_app, 2)
        await g1.publish(f"kp1/v1/dcx/{globex_token}/json", b'{"g": true}', qos=1)
        globex_got = await collect(globex_app, 1)
        assert await collect(acme_app, 1, timeout=0.5) == []  # globex's sample never reaches acme
    assert [t for t, _ in got] == ["$gateway/data/acme/kettle-1/dcx"] * 2
    first, second = got[0][1], got[1][1]
    assert set(first) == {"endpointId", "appVersionName", "receivedAt", "samples"}
    assert first["endpointId"] == "kettle-1" and first["appVersionName"] == "kettle_v1"
    assert first["samples"] == [{"temperature": 21.5}]
    assert second["samples"] == [{"t": 1}, {"t": 2, "nested": {"a": [1]}}]
    assert isinstance(first["receivedAt"], int)
    assert token not in json.dumps(got)  # by device id: the token, a credential, never leaves
    assert [(t, p["endpointId"], p["samples"]) for t, p in globex_got] == [
        ("$gateway/data/globex/g-1/dcx", "g-1", [{"g": True}])
    ]


async def test_applications_subscribe_below_their_own_tenant_only(gateway: Gateway, api: httpx.AsyncClient) -> None:
    account = await service_account(api)
    await service_account(api, "globex", "g")
    token = await make_device(api, "acme", "d1")
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("svc", account["username"], account["password"]))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        cases = {
            "$gateway/data/acme/+/dcx": True,
            "$gateway/data/acme/#": True,
            "$gateway/commands/acme/+/+/result": True,
            "$gateway/data/globex/#": False,
            "$gateway/data/+/+/dcx": False,
            "$gateway/+/acme/#": False,
            f"kp1/v1/dcx/{token}/#": False,
        }
        assert await granted(raw, list(cases)) == list(cases.values())
    finally:
        await raw.close()
    device = await RawClient.open(gateway.ports["mqtt"])  # and a device cannot read applications' topics
    try:
        await device.send(connect_packet("d", token))
        assert await device.read_packet() == b"\x20\x02\x00\x00"
        assert await granted(device, ["$gateway/data/acme/#"]) == [False]
    finally:
        await device.close()


@pytest.mark.gateway_settings(data_max_samples=3, data_max_payload_bytes=256, data_max_depth=3)
async def test_bad_data_gets_a_clear_error_and_the_device_stays_connected(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    account = await service_account(api)
    base = f"kp1/v1/dcx/{token}"
    cases: list[tuple[str, bytes, int]] = [
        ("json/1", b"{not json", 400),
        ("json/2", b"[]", 400),
        ("json/3", b"[1, 2]", 400),
        ("json/4", b'"text"', 400),
        ("json/5", b"\xff\xfe", 400),
        ("json/6", b'{"a": NaN}', 400),
        ("json/7", b'{"a": {"b": {"c": {}}}}', 400),
        ("json/8", b"[" + b",".join([b"{}"] * 4) + b"]", 413),
        ("json/9", b'{"a": "' + b"x" * 300 + b'"}', 413),
        ("csv/10", b"1,2", 404),
        ("11", b"{}", 404),
    ]
    async with (
        mqtt(gateway, account["username"], account["password"], client_id="a") as app,
        mqtt(gateway, token) as device,
    ):
        await app.subscribe(DATA, qos=1)
        await device.subscribe(f"{base}/#", qos=1)
        for path, payload, status in cases:
            await device.publish(f"{base}/{path}", payload, qos=1)
            topic, body = await _reply(device)
            assert topic == f"{base}/{path}/error", path
            assert _error(body)[0] == status, (path, body)
        assert await collect(app, 1, timeout=0.3) == []  # nothing refused was forwarded
        await device.publish(f"{base}/json/12", b'{"ok": 1}', qos=1)
        assert await _reply(device) == (f"{base}/json/12/status", b"")
        assert [p["samples"] for _, p in await collect(app, 1)] == [[{"ok": 1}]]
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["dataRefused"] == {"400": 7, "413": 2, "404": 2}
    assert metrics["dataMessages"] == 1 and metrics["dataSamples"] == 1


@pytest.mark.gateway_settings(data_messages_per_second=0.01, data_burst=3)
async def test_a_device_over_its_data_rate_gets_429(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    base = f"kp1/v1/dcx/{token}/json"
    async with mqtt(gateway, token) as device:
        await device.subscribe(f"{base}/#", qos=1)
        statuses = []
        for i in range(1, 6):
            await device.publish(f"{base}/{i}", b"{}", qos=1)
            topic, body = await _reply(device)
            statuses.append(_error(body)[0] if topic.endswith("/error") else 200)
    assert statuses == [200, 200, 200, 429, 429]


async def test_the_last_sample_is_readable_per_device(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, "acme", "d1")
    await make_device(api, "acme", "quiet")
    await make_device(api, "globex", "d1")
    r = await api.get("/v1/tenants/acme/devices/d1/data/last")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    async with mqtt(gateway, token) as device:
        await device.subscribe(f"kp1/v1/dcx/{token}/#", qos=1)
        await device.subscribe(f"kp1/v2/dcx/{token}/#", qos=1)
        await device.publish(f"kp1/v1/dcx/{token}/json/1", b'[{"t": 1}, {"t": 2}]', qos=1)
        await _reply(device)
        await device.publish(f"kp1/v2/dcx/{token}/json/2", b'{"t": 3}', qos=1)
        await _reply(device)
    last = await ok(api.get("/v1/tenants/acme/devices/d1/data/last"))
    assert last["sample"] == {"t": 3} and last["appVersionName"] == "v2"
    assert last["messages"] == 2 and last["samples"] == 3 and last["endpointId"] == "d1"
    assert "receivedAt" in last
    # the same device id in another tenant, a device that sent nothing, an unknown one
    assert (await api.get("/v1/tenants/globex/devices/d1/data/last")).status_code == 404
    assert (await api.get("/v1/tenants/acme/devices/quiet/data/last")).status_code == 404
    assert (await api.get("/v1/tenants/acme/devices/nobody/data/last")).status_code == 404
    await ok(api.delete("/v1/tenants/acme/devices/d1"), 204)  # a deleted device leaves nothing behind
    await ok(api.post("/v1/tenants/acme/devices?reuseDeletedId=true", json={"id": "d1"}), 201)
    assert (await api.get("/v1/tenants/acme/devices/d1/data/last")).status_code == 404


async def test_a_tenant_forwards_other_extensions_on_request(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    account = await service_account(api)
    r = await api.patch("/v1/tenants/acme", json={"forwardExtensions": ["epmx"]})
    assert r.status_code == 422 and "handled by the gateway" in r.json()["message"]
    async with (
        mqtt(gateway, account["username"], account["password"], client_id="a") as app,
        mqtt(gateway, token) as device,
    ):
        await app.subscribe("$gateway/data/acme/#", qos=1)
        await device.subscribe(f"kp1/v1/logs/{token}/#", qos=1)
        await device.publish(f"kp1/v1/logs/{token}/app", b'{"line": "before"}', qos=1)
        own = await next_message(device)  # private to the device, as before
        assert own is not None and bytes(own.payload) == b'{"line": "before"}'  # type: ignore[arg-type]
        assert await collect(app, 1, timeout=0.3) == []
        tenant = await ok(api.patch("/v1/tenants/acme", json={"forwardExtensions": ["logs"]}))
        assert tenant["forwardExtensions"] == ["logs"]
        await device.publish(f"kp1/v1/logs/{token}/app/7", b'{"line": "after"}', qos=1)
        await device.publish(f"kp1/v1/logs/{token}/raw", b"\x00\x01binary", qos=1)
        got = await collect(app, 2)
    assert [t for t, _ in got] == ["$gateway/data/acme/dev-1/logs"] * 2
    assert got[0][1]["payload"] == {"line": "after"} and got[0][1]["path"] == "/app" and got[0][1]["requestId"] == 7
    assert got[1][1]["payloadBase64"] == "AAFiaW5hcnk=" and got[1][1]["endpointId"] == "dev-1"


@pytest.mark.gateway_settings(max_queued_messages=10)
async def test_an_application_that_cannot_keep_up_loses_data_not_its_session(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """At most once: a full queue drops the oldest data; the application is not disconnected for it."""
    token = await make_device(api)
    account = await service_account(api)
    async with mqtt(gateway, account["username"], account["password"], client_id="slow", clean_session=False) as app:
        await app.subscribe(DATA, qos=1)
    # offline, persistent: data queues within the bounds while it is away
    async with mqtt(gateway, token) as device:
        for i in range(50):
            await device.publish(f"kp1/v1/dcx/{token}/json", json.dumps({"i": i}).encode(), qos=1)
    metrics: dict[str, Any] = await ok(api.get("/v1/metrics"))
    assert metrics["messagesDropped"] >= 40
    async with mqtt(gateway, account["username"], account["password"], client_id="slow", clean_session=False) as app:
        got = await collect(app, 10, timeout=3)
        assert [p["samples"][0]["i"] for _, p in got] == list(range(40, 50))  # the newest kept
    status = await ok(api.get("/v1/metrics"))
    assert status["disconnects"].get("slow_consumer", 0) == 0


async def test_a_will_on_the_data_topic_reaches_the_application(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """The will goes out like a publish of the device: to 2/DCP when that is where it points."""
    token = await make_device(api)
    account = await service_account(api)
    async with mqtt(gateway, account["username"], account["password"], client_id="a") as app:
        await app.subscribe(DATA, qos=1)
        device = await RawClient.open(gateway.ports["mqtt"])
        await device.send(connect_packet("d", token, will=(f"kp1/v1/dcx/{token}/json", b'{"status": "offline"}')))
        assert await device.read_packet() == b"\x20\x02\x00\x00"
        device.writer.transport.abort()  # gone without DISCONNECT
        got = await collect(app, 1)
    assert [(t, p["samples"]) for t, p in got] == [("$gateway/data/acme/dev-1/dcx", [{"status": "offline"}])]


@pytest.mark.gateway_settings(data_max_payload_bytes=1024)
async def test_forwarded_extensions_keep_the_data_size_limit(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A 900 KB publish to a forwarded extension used to reach applications as 1.2 MB of base64."""
    token = await make_device(api)
    account = await service_account(api)
    await ok(api.patch("/v1/tenants/acme", json={"forwardExtensions": ["logs"]}))
    async with mqtt(gateway, account["username"], account["password"], client_id="a") as app:
        await app.subscribe("$gateway/data/acme/#", qos=1)
        async with mqtt(gateway, token) as device:
            await device.publish(f"kp1/v1/logs/{token}/big", b"x" * 2000, qos=1)
            await device.publish(f"kp1/v1/logs/{token}/small", b"x" * 10, qos=1)
        got = await collect(app, 2, timeout=1)
    assert [p["path"] for _, p in got] == ["/small"]
    assert (await ok(api.get("/v1/metrics")))["dataRefused"] == {"413": 1}


async def test_received_at_has_one_form_over_mqtt_and_rest(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Issue 17: `receivedAt` was epoch ms over MQTT and ISO text over REST, with nothing naming either.
    REST keeps its ISO `receivedAt` (as all its times) and adds `receivedAtMs`, MQTT's very number."""
    token = await make_device(api, "acme", "kettle-1")
    app = await service_account(api)
    async with mqtt(gateway, app["username"], app["password"], client_id="a") as application, mqtt(gateway, token) as d:
        await application.subscribe(DATA, qos=1)
        await d.publish(f"kp1/v1/dcx/{token}/json", b'{"t": 1}', qos=1)
        ((_, sent),) = await collect(application, 1)
    last = await ok(api.get("/v1/tenants/acme/devices/kettle-1/data/last"))
    assert isinstance(sent["receivedAt"], int) and last["receivedAtMs"] == sent["receivedAt"]
    iso = datetime.fromisoformat(last["receivedAt"])
    assert iso.tzinfo is not None and round(iso.timestamp() * 1000) == sent["receivedAt"]
    schema = (await ok(api.get("/openapi.json")))["components"]["schemas"]["LastDataOut"]["properties"]
    assert "ms since the epoch" in schema["receivedAtMs"]["description"]
    assert "ISO 8601" in schema["receivedAt"]["description"]
