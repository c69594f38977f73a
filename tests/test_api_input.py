"""Hostile input never answers 500 and never stores what cannot be served back as JSON.

Operators (management API) get 422 for values that parse but cannot be stored: integers beyond a
sane bound, NaN/Infinity, lone UTF-16 surrogates; truly malformed JSON stays 400. Devices sending the
same values in a 10/EPMP request get the protocol's 400 on `/error`. Either way nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_message, ok, outbox_events
from .pki_helpers import make_ca, trust

METADATA = "/v1/tenants/acme/devices/dev-1/metadata"
UPDATED = "endpoint/metadata/updated"


async def request(api: httpx.AsyncClient, method: str, path: str, text: str | None) -> httpx.Response:
    """`text` goes on the wire as it is: json= cannot write NaN, 1e23 or a lone \\ud800 escape."""
    if text is None:
        return await api.request(method, path)
    return await api.request(method, path, content=text.encode(), headers={"content-type": "application/json"})


def assert_error(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) <= {"error", "message", "field"} and {"error", "message"} <= set(body), body
    assert body["error"] == {400: "bad_request", 404: "not_found", 422: "invalid"}[status], body
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body.get("field") == field, body
    return body


# -- integers the registry stores --------------------------------------------------------------


TOO_BIG = ["1e23", "100000000000000000000000", "9223372036854775808", "-9223372036854775809", "NaN", "Infinity"]
LIMITS = [("maxDevices", 10**9), ("maxConnections", 10_000_000)]


@pytest.mark.parametrize("value", TOO_BIG)
@pytest.mark.parametrize(("name", "bound"), LIMITS)
async def test_tenant_limits_beyond_the_bound_are_422_on_create(
    api: httpx.AsyncClient, name: str, bound: int, value: str
) -> None:
    for text in (value, str(bound + 1)):
        assert_error(await request(api, "POST", "/v1/tenants", f'{{"id": "acme", "{name}": {text}}}'), 422, name)
    await ok(api.get("/v1/tenants/acme"), 404)


@pytest.mark.parametrize("value", TOO_BIG)
@pytest.mark.parametrize(("name", "bound"), LIMITS)
async def test_tenant_limits_beyond_the_bound_are_422_on_patch(
    api: httpx.AsyncClient, name: str, bound: int, value: str
) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme", name: 5}), 201)
    for text in (value, str(bound + 1)):
        assert_error(await request(api, "PATCH", "/v1/tenants/acme", f'{{"{name}": {text}}}'), 422, name)
    assert (await ok(api.get("/v1/tenants/acme")))[name] == 5


async def test_max_devices_up_to_the_bound_is_stored(api: httpx.AsyncClient) -> None:
    created = await ok(api.post("/v1/tenants", json={"id": "acme", "maxDevices": 10**9}), 201)
    assert created["maxDevices"] == 10**9
    assert (await ok(api.patch("/v1/tenants/acme", json={"maxDevices": 0})))["maxDevices"] == 0


@pytest.mark.parametrize("value", ["1e23", "100000000000000000000000", "NaN", "Infinity"])
async def test_provisioning_rate_beyond_the_bound_is_422(api: httpx.AsyncClient, tmp_path: Path, value: str) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    ca = make_ca(tmp_path, "Acme CA")
    body = f'{{"cert": {json.dumps(ca.pem)}, "provisioningRatePerMinute": {value}}}'
    assert_error(await request(api, "POST", "/v1/tenants/acme/trusted-cas", body), 422, "provisioningRatePerMinute")
    assert await ok(api.get("/v1/tenants/acme/trusted-cas")) == []


# -- metadata: values that parse but cannot be stored ---------------------------------------------

UNSTORABLE = [
    ('{"a": "\\ud800"}', "a"),
    ('{"a": "x\\udfff"}', "a"),
    ('{"a": {"\\ud800": 1}}', "a.\\ud800"),
    ('{"ok": 1, "a": ["\\udc00\\ud800"]}', "a.0"),
    ('{"a": NaN}', "a"),
    ('{"a": Infinity}', "a"),
    ('{"a": -Infinity}', "a"),
    ('{"a": {"b": [1, NaN]}}', "a.b.1"),
    ('{"a": 1e400}', "a"),
]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize(("text", "field"), UNSTORABLE)
async def test_unstorable_metadata_is_422_and_nothing_is_stored(
    gateway: Gateway, api: httpx.AsyncClient, method: str, text: str, field: str
) -> None:
    await make_device(api)
    await ok(api.put(METADATA, json={"keep": "me"}))
    events = len(await outbox_events(gateway, "acme", UPDATED))
    assert_error(await request(api, method, METADATA, text), 422, field)
    assert await ok(api.get(METADATA)) == {"keep": "me"}
    assert len(await outbox_events(gateway, "acme", UPDATED)) == events


async def test_a_lone_surrogate_in_a_top_level_key_is_422(api: httpx.AsyncClient) -> None:
    await make_device(api)
    assert_error(await request(api, "PUT", METADATA, '{"\\ud800": 1}'), 422)
    assert await ok(api.get(METADATA)) == {}


@pytest.mark.parametrize("text", ['{"a": ', '{"a": nan}', '{"a": 1, "a": 2}', '{"a": +1}', ""])
async def test_malformed_metadata_json_stays_400(api: httpx.AsyncClient, text: str) -> None:
    await make_device(api)
    assert_error(await request(api, "PUT", METADATA, text), 400)
    assert await ok(api.get(METADATA)) == {}


async def test_what_metadata_still_accepts(api: httpx.AsyncClient) -> None:
    await make_device(api)
    text = '{"emoji": "\\ud83d\\ude00", "big": 123456789012345678901234567890, "max": 1.7976931348623157e308}'
    stored = {"emoji": "\U0001f600", "big": 123456789012345678901234567890, "max": 1.7976931348623157e308}
    r = await request(api, "PUT", METADATA, text)
    assert r.status_code == 200 and r.json() == stored
    assert await ok(api.get(METADATA)) == stored


# -- the same values from a device: 10/EPMP answers 400 --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": [1e400]}',
        '{"a": "\\ud800"}',
        '{"a": {"\\udfff": true}}',
    ],
)
async def test_epmp_update_with_unstorable_values_is_400(gateway: Gateway, api: httpx.AsyncClient, text: str) -> None:
    token = await make_device(api, app_version="v1")
    await ok(api.put(METADATA, json={"keep": "me"}))
    events = len(await outbox_events(gateway, "acme", UPDATED))
    async with mqtt(gateway, token) as client:
        await client.subscribe(f"kp1/v1/epmx/{token}/#")
        for path in ("update/keys", "update"):
            await client.publish(f"kp1/v1/epmx/{token}/{path}/1", text.encode())
            reply = await next_message(client, timeout=3.0)
            assert reply is not None and str(reply.topic) == f"kp1/v1/epmx/{token}/{path}/1/error"
            body = json.loads(bytes(reply.payload))  # type: ignore[arg-type]
            assert body["statusCode"] == 400 and set(body) == {"statusCode", "reasonPhrase"}, body
        # and a read never serves what a write could not store
        await client.publish(f"kp1/v1/epmx/{token}/get/2", b"")
        reply = await next_message(client, timeout=3.0)
        assert reply is not None and json.loads(bytes(reply.payload)) == {"keep": "me"}  # type: ignore[arg-type]
    assert await ok(api.get(METADATA)) == {"keep": "me"}
    assert len(await outbox_events(gateway, "acme", UPDATED)) == events


async def test_epmp_get_with_a_surrogate_key_is_400(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, app_version="v1")
    async with mqtt(gateway, token) as client:
        await client.subscribe(f"kp1/v1/epmx/{token}/#")
        await client.publish(f"kp1/v1/epmx/{token}/get/1", b'{"keys": ["\\ud800"]}')
        reply = await next_message(client, timeout=3.0)
        assert reply is not None and str(reply.topic).endswith("/get/1/error")
        assert json.loads(bytes(reply.payload))["statusCode"] == 400  # type: ignore[arg-type]


# -- any other hostile input: a clear 4xx, never 500 -----------------------------------------------

HOSTILE = [
    # trusted-CA PATCH: null for a setting that has no "unset" (today a NOT NULL constraint: 500)
    ("PATCH", "/v1/tenants/acme/trusted-cas/{ca}", '{"enabled": null}', 422, "enabled"),
    ("PATCH", "/v1/tenants/acme/trusted-cas/{ca}", '{"autoProvisioningEnabled": null}', 422, "autoProvisioningEnabled"),
    ("PATCH", "/v1/tenants/acme/trusted-cas/{ca}", '{"deviceIdTemplate": null}', 422, "deviceIdTemplate"),
    ("PATCH", "/v1/tenants/acme/trusted-cas/{ca}", '{"authIdTemplate": null}', 422, "authIdTemplate"),
    ("PATCH", "/v1/tenants/acme/trusted-cas/{ca}", '{"group": null}', 422, "group"),
    (
        "PATCH",
        "/v1/tenants/acme/trusted-cas/{ca}",
        '{"provisioningRatePerMinute": 1e23}',
        422,
        "provisioningRatePerMinute",
    ),
    # lone surrogates and non-finite numbers in typed bodies
    ("POST", "/v1/tenants", '{"id": "\\ud800"}', 422, "id"),
    ("POST", "/v1/tenants", '{"id": "t", "maxDevices": NaN}', 422, "maxDevices"),
    ("POST", "/v1/tenants/acme/devices", '{"id": "d2", "attributes": {"a": "\\ud800"}}', 422, None),
    ("POST", "/v1/tenants/acme/devices", '{"id": "d2", "attributes": {"\\ud800": "a"}}', 422, None),
    ("PATCH", "/v1/tenants/acme/devices/dev-1", '{"attributes": {"a": "\\udfff"}}', 422, None),
    ("POST", "/v1/tenants/acme/devices/dev-1/tokens", '{"token": "x\\ud800"}', 422, "token"),
    ("PUT", "/v1/tenants/acme/devices/dev-1/passwords/p1", '{"password": "\\ud800"}', 422, "password"),
    ("POST", "/v1/tenants/acme/trusted-cas/check", '{"cert": "\\ud800"}', 422, "cert"),
    ("POST", "/v1/tenants/acme/service-accounts", '{"id": "\\ud800"}', 422, "id"),
    ("POST", "/v1/tenants", '{"id": "t", "\\ud800": 1}', 422, None),
    # wrong shapes, depth
    ("POST", "/v1/tenants", "[]", 422, None),
    ("POST", "/v1/tenants", '"acme"', 422, None),
    ("POST", "/v1/tenants", "[" * 5000 + "]" * 5000, 400, None),
    ("POST", "/v1/tenants/acme/devices", '{"id": "d2", "attributes": ' + '{"a": ' * 3000 + "1" + "}" * 3001, 400, None),
    ("PUT", METADATA, '{"a": ' + "[" * 3000 + "]" * 3000 + "}", 400, None),
    ("PUT", METADATA, "[]", 400, None),
    # surrogates and NULs in path and query parameters (percent-encoded bytes that are not UTF-8)
    ("GET", "/v1/tenants/%ED%A0%80", None, 404, None),
    ("GET", "/v1/tenants/acme/devices/%ED%A0%80", None, 404, None),
    ("GET", "/v1/tenants/acme/devices/%ED%A0%80/metadata", None, 404, None),
    ("PUT", "/v1/tenants/acme/devices/%ED%A0%80/metadata", '{"a": 1}', 404, None),
    ("GET", "/v1/tenants/acme/tokens/%ED%A0%80", None, 404, None),
    ("GET", "/v1/tenants/acme/devices/dev-1/tokens/%00", None, 404, None),
    ("PUT", "/v1/tenants/acme/devices/dev-1/passwords/%ED%A0%80", '{"password": "x"}', 422, None),
    ("DELETE", METADATA + "?keys=%ED%A0%80", None, 422, "keys"),
    ("GET", "/v1/tenants/acme/devices?after=%ED%A0%80%00", None, None, None),
    ("GET", "/v1/tenants/acme/devices?limit=99999999999999999999999", None, 422, "limit"),
    ("GET", "/v1/tenants/acme/devices/dev-1/connection?log=1e23", None, 422, "log"),
]


def _case_id(case: tuple[str, str, str | None, int | None, str | None]) -> str:
    method, path, text, _, _ = case
    return f"{method} {path.removeprefix('/v1/tenants')[:48]} {(text or '')[:40]}"


@pytest.mark.parametrize(("method", "path", "text", "status", "field"), HOSTILE, ids=[_case_id(c) for c in HOSTILE])
async def test_hostile_requests_get_a_clear_error(
    api: httpx.AsyncClient,
    tmp_path: Path,
    method: str,
    path: str,
    text: str | None,
    status: int | None,
    field: str | None,
) -> None:
    await make_device(api)
    ca = await ok(trust(api, "acme", make_ca(tmp_path, "Acme CA")), 201)
    r = await request(api, method, path.format(ca=ca["id"]), text)
    if status is None:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, status, field)
    assert (await ok(api.get(f"/v1/tenants/acme/trusted-cas/{ca['id']}")))["enabled"] is True
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["dev-1"]
