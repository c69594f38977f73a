"""Issue 10 point 2: a group's policy, delivered to its devices by 7/CMP, and what they applied."""

from __future__ import annotations

import hashlib
import json

import httpx

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_json, next_message, ok, outbox_events


def cmx(token: str, rest: str) -> str:
    return f"kp1/v1/cmx/{token}/{rest}"


async def _setup(api: httpx.AsyncClient) -> str:
    token = await make_device(api)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "lab"}), 201)
    await ok(api.post("/v1/tenants/acme/groups/lab/devices", json={"devices": ["dev-1"]}))
    return token


async def test_a_device_gets_applies_and_observes_its_groups_policy(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await _setup(api)
    policy = await ok(api.put("/v1/tenants/acme/groups/lab/policy", json={"interval": 30, "mode": "eco"}))
    canonical = json.dumps({"interval": 30, "mode": "eco"}, sort_keys=True, separators=(",", ":"))
    assert policy["configId"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert (await ok(api.get("/v1/tenants/acme/devices/dev-1")))["state"] == "registered"
    async with mqtt(gateway, token) as device:
        await device.subscribe(cmx(token, "config/json/#"), qos=1)  # observes: pushes arrive on .../status
        topic, pushed = await next_json(device)  # what it should have, on subscribing
        assert topic == cmx(token, "config/json/status")
        assert pushed == {"configId": policy["configId"], "config": {"interval": 30, "mode": "eco"}}
        # a request with the config id it has: {} (unchanged)
        await device.publish(cmx(token, "config/json/1"), json.dumps({"configId": policy["configId"]}).encode(), qos=1)
        assert await next_json(device) == (cmx(token, "config/json/1/status"), {})
        await device.subscribe(cmx(token, "applied/json/#"), qos=1)
        body = json.dumps({"configId": policy["configId"]}).encode()  # statusCode defaults to 200
        await device.publish(cmx(token, "applied/json/2"), body, qos=1)
        assert await next_json(device) == (cmx(token, "applied/json/2/status"), None)
        dev = await ok(api.get("/v1/tenants/acme/devices/dev-1"))
        assert dev["state"] == "provisioned" and dev["configApplied"] == policy["configId"]
        assert dev["policyPending"] is False
        # the operator changes the policy: pushed at once; the device stays provisioned, policy pending
        new = await ok(api.put("/v1/tenants/acme/groups/lab/policy", json={"interval": 60}))
        topic, pushed = await next_json(device)
        assert (topic, pushed) == (
            cmx(token, "config/json/status"),
            {"configId": new["configId"], "config": {"interval": 60}},
        )
        dev = await ok(api.get("/v1/tenants/acme/devices/dev-1"))
        assert (dev["state"], dev["policyPending"], dev["configAssigned"]) == ("provisioned", True, new["configId"])
        # applying an old policy is a 409 and changes nothing; a failed apply is kept as the last error
        await device.publish(cmx(token, "applied/json/3"), body, qos=1)
        topic, error = await next_json(device)
        assert topic == cmx(token, "applied/json/3/error") and error["statusCode"] == 409
        failed = {"configId": new["configId"], "statusCode": 500, "reasonPhrase": "flash full"}
        await device.publish(cmx(token, "applied/json/4"), json.dumps(failed).encode(), qos=1)
        assert (await next_json(device))[0] == cmx(token, "applied/json/4/status")
        dev = await ok(api.get("/v1/tenants/acme/devices/dev-1"))
        assert dev["configError"]["statusCode"] == 500 and dev["configError"]["reasonPhrase"] == "flash full"
        assert dev["policyPending"] is True
    history = [e["event"] for e in await ok(api.get("/v1/tenants/acme/devices/dev-1/history"))]
    assert history[:3] == ["config-failed", "state-changed", "config-applied"]
    changed = await outbox_events(gateway, "acme", "endpoint/lifecycle/state-changed")
    assert [(e["payload"]["previousState"], e["payload"]["state"]) for e in changed][-1] == (
        "registered",
        "provisioned",
    )


async def test_moving_a_device_pushes_its_new_groups_policy(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await _setup(api)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "field"}), 201)
    field = await ok(api.put("/v1/tenants/acme/groups/field/policy", json={"gps": True}))
    async with mqtt(gateway, token) as device:
        await device.subscribe(cmx(token, "config/json/status"), qos=1)
        await next_json(device)  # lab's (empty) policy, on subscribing
        await ok(api.post("/v1/tenants/acme/groups/field/devices", json={"devices": ["dev-1"]}))
        assert await next_json(device) == (
            cmx(token, "config/json/status"),
            {"configId": field["configId"], "config": {"gps": True}},
        )
        # observe off: the next change is not pushed, but a request still answers
        await device.publish(cmx(token, "config/json"), b'{"observe": false}', qos=1)
        await next_json(device)
        await ok(api.put("/v1/tenants/acme/groups/field/policy", json={"gps": False}))
        assert await next_message(device, 0.5) is None


async def test_bad_7cmp_requests_get_clear_errors(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await _setup(api)
    async with mqtt(gateway, token) as device:
        await device.subscribe(cmx(token, "#"), qos=1)
        await next_json(device)  # the push on subscribing
        for path, payload, status in [
            ("config/json/1", b"[]", 400),
            ("config/json/2", b'{"observe": "yes"}', 400),
            ("config/json/3", b'{"extra": 1}', 400),
            ("applied/json/4", b"{}", 400),
            ("applied/json/5", b'{"configId": "x", "statusCode": 42}', 400),
            ("applied/json/6", b'{"configId": "not-the-current-one"}', 409),
            ("config/yaml/7", b"", 404),
            ("config/json/8", b"{" * 40, 400),
        ]:
            await device.publish(cmx(token, path), payload, qos=1)
            topic, error = await next_json(device)
            assert topic == cmx(token, f"{path}/error") and error["statusCode"] == status, (path, error)
    assert (await ok(api.get("/v1/tenants/acme/devices/dev-1")))["state"] == "registered"


async def test_policies_are_validated(api: httpx.AsyncClient) -> None:
    await _setup(api)
    r = await api.put("/v1/tenants/acme/groups/lab/policy", json=[1, 2])
    assert r.status_code == 422
    r = await api.put("/v1/tenants/acme/groups/lab/policy", content=b'{"a": 1, "a": 2}')
    assert r.status_code == 400
    r = await api.put("/v1/tenants/acme/groups/lab/policy", json={"blob": "x" * 70_000})
    assert r.status_code == 413
    assert (await api.put("/v1/tenants/acme/groups/nowhere/policy", json={})).status_code == 404
    same = [await ok(api.put("/v1/tenants/acme/groups/lab/policy", json={"b": 1, "a": [1, 2]})) for _ in range(2)]
    assert same[0]["configId"] == same[1]["configId"]  # a content hash
    assert (await ok(api.get("/v1/tenants/acme/groups/lab/policy")))["config"] == {"a": [1, 2], "b": 1}
