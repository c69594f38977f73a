"""Issue 10 point 3: lifecycle states with enforced transitions, a history per device, tombstones."""

from __future__ import annotations

import json

import httpx

from gateway.node.runtime import Gateway

from .conftest import connect_refused, mqtt, next_message, ok, outbox_events

CHANGED = "endpoint/lifecycle/state-changed"


async def _state(api: httpx.AsyncClient, device: str = "d1") -> str:
    return str((await ok(api.get(f"/v1/tenants/acme/devices/{device}")))["state"])


async def test_credentials_move_a_device_between_enrolled_and_registered(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1"}), 201)
    assert await _state(api) == "enrolled"  # an identity, no credential: nothing can connect as it
    token = (await ok(api.post("/v1/tenants/acme/devices/d1/tokens"), 201))["token"]
    assert await _state(api) == "registered"
    await ok(api.put("/v1/tenants/acme/devices/d1/passwords/d1", json={"password": "s3cret-pass"}))
    assert await _state(api) == "registered"  # the first credential moved it; the second changes nothing
    await ok(api.delete(f"/v1/tenants/acme/devices/d1/tokens/{token}"), 204)
    assert await _state(api) == "registered"
    await ok(api.delete("/v1/tenants/acme/devices/d1/passwords/d1"), 204)
    assert await _state(api) == "enrolled"  # its last credential gone
    assert await connect_refused(gateway, token) == 135  # CONNACK 5, as paho reports it
    changes = [
        (e["payload"]["previousState"], e["payload"]["state"]) for e in await outbox_events(gateway, "acme", CHANGED)
    ]
    assert changes == [("enrolled", "registered"), ("registered", "enrolled")]
    history = await ok(api.get("/v1/tenants/acme/devices/d1/history"))
    assert [(h["event"], h["detail"].get("state")) for h in history] == [
        ("state-changed", "enrolled"),
        ("state-changed", "registered"),
        ("created", "enrolled"),
    ]
    assert history[1]["detail"]["reason"] == "credential added"


async def test_illegal_transitions_are_409_and_name_the_allowed_ones(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1"}), 201)
    token = (await ok(api.post("/v1/tenants/acme/devices/d1/tokens"), 201))["token"]
    for target in ("provisioned", "enrolled", "deleted"):
        r = await api.patch("/v1/tenants/acme/devices/d1", json={"state": target})
        assert r.status_code == 409 and "allowed from registered: none" in r.json()["message"], r.text
    assert (await api.patch("/v1/tenants/acme/devices/d1", json={"state": "gone"})).status_code == 422
    # provisioned by applying its group's policy; an operator may send it back to registered
    policy = await ok(api.get("/v1/tenants/acme/groups/default/policy"))
    async with mqtt(gateway, token) as device:
        await device.subscribe(f"kp1/v1/cmx/{token}/applied/json/#", qos=1)
        await device.publish(
            f"kp1/v1/cmx/{token}/applied/json/1", json.dumps({"configId": policy["configId"]}).encode(), qos=1
        )
        assert await next_message(device) is not None
    assert await _state(api) == "provisioned"
    r = await api.patch("/v1/tenants/acme/devices/d1", json={"state": "enrolled"})
    assert r.status_code == 409 and "allowed from provisioned: registered" in r.json()["message"]
    assert (await ok(api.patch("/v1/tenants/acme/devices/d1", json={"state": "registered"})))["state"] == "registered"
    last = (await ok(api.get("/v1/tenants/acme/devices/d1/history")))[0]
    assert last["detail"] == {"previousState": "provisioned", "state": "registered", "reason": "operator"}


async def test_a_deleted_device_leaves_a_tombstone_and_its_id_is_reused_only_on_purpose(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "lab"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1", "group": "lab", "appVersion": "v1"}), 201)
    await ok(api.delete("/v1/tenants/acme/devices/d1"), 204)
    tombstones = await ok(api.get("/v1/tenants/acme/deleted-devices"))
    assert [(t["id"], t["group"], t["appVersion"]) for t in tombstones] == [("d1", "lab", "v1")]
    assert tombstones[0]["deletedAt"]
    r = await api.post("/v1/tenants/acme/devices", json={"id": "d1"})
    assert r.status_code == 409 and "reuseDeletedId" in r.json()["message"]
    await ok(api.post("/v1/tenants/acme/devices?reuseDeletedId=true", json={"id": "d1"}), 201)
    assert await ok(api.get("/v1/tenants/acme/deleted-devices")) == []
    assert await _state(api) == "enrolled"
    deleted = [
        e["payload"] for e in await outbox_events(gateway, "acme", CHANGED) if e["payload"]["state"] == "deleted"
    ]
    assert [(p["endpointId"], p["previousState"]) for p in deleted] == [("d1", "enrolled")]
