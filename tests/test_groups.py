"""Issue 10 point 1: device groups are entities; every device is in exactly one group of its tenant."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import make_device, ok
from .pki_helpers import make_ca, trust


async def _tenant(api: httpx.AsyncClient, tenant: str = "acme") -> None:
    await ok(api.post("/v1/tenants", json={"id": tenant}), 201)


async def test_groups_are_created_listed_with_counts_described_and_renamed(api: httpx.AsyncClient) -> None:
    await _tenant(api)
    assert [g["id"] for g in await ok(api.get("/v1/tenants/acme/groups"))] == ["default"]  # made with the tenant
    kitchen = await ok(api.post("/v1/tenants/acme/groups", json={"id": "kitchen", "description": "kettles"}), 201)
    assert kitchen["devices"] == 0 and kitchen["description"] == "kettles" and len(kitchen["configId"]) == 64
    assert (await api.post("/v1/tenants/acme/groups", json={"id": "kitchen"})).status_code == 409
    assert (await api.post("/v1/tenants/acme/groups", json={"id": "bad/id"})).status_code == 422
    for i in range(3):
        await ok(api.post("/v1/tenants/acme/devices", json={"id": f"k{i}", "group": "kitchen"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "plain"}), 201)
    counts = {g["id"]: g["devices"] for g in await ok(api.get("/v1/tenants/acme/groups"))}
    assert counts == {"default": 1, "kitchen": 3}
    renamed = await ok(api.patch("/v1/tenants/acme/groups/kitchen", json={"id": "galley", "description": "boats"}))
    assert (renamed["id"], renamed["devices"], renamed["description"]) == ("galley", 3, "boats")
    assert (await ok(api.get("/v1/tenants/acme/devices/k0")))["group"] == "galley"  # its devices follow
    assert (await api.get("/v1/tenants/acme/groups/kitchen")).status_code == 404
    assert (await api.patch("/v1/tenants/acme/groups/default", json={"id": "x"})).status_code == 409


async def test_a_device_cannot_exist_outside_a_group(api: httpx.AsyncClient) -> None:
    await _tenant(api)
    await _tenant(api, "globex")
    await ok(api.post("/v1/tenants/globex/groups", json={"id": "theirs"}), 201)
    r = await api.post("/v1/tenants/acme/devices", json={"id": "d1", "group": "nowhere"})
    assert r.status_code == 422 and r.json()["field"] == "group"
    r = await api.post("/v1/tenants/acme/devices", json={"id": "d1", "group": "theirs"})  # another tenant's
    assert r.status_code == 422
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1"}), 201)
    assert (await api.patch("/v1/tenants/acme/devices/d1", json={"group": "nowhere"})).status_code == 422
    assert (await ok(api.get("/v1/tenants/acme/devices/d1")))["group"] == "default"


async def test_deleting_a_group_with_devices_needs_move_to(api: httpx.AsyncClient) -> None:
    await _tenant(api)
    for group in ("old", "new"):
        await ok(api.post("/v1/tenants/acme/groups", json={"id": group}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1", "group": "old"}), 201)
    r = await api.delete("/v1/tenants/acme/groups/old")
    assert r.status_code == 409 and "moveTo" in r.json()["message"]
    assert (await api.delete("/v1/tenants/acme/groups/old?moveTo=nowhere")).status_code == 422
    assert (await api.delete("/v1/tenants/acme/groups/old?moveTo=old")).status_code == 422
    await ok(api.delete("/v1/tenants/acme/groups/old?moveTo=new"), 204)
    assert (await ok(api.get("/v1/tenants/acme/devices/d1")))["group"] == "new"
    await ok(api.delete("/v1/tenants/acme/groups/default?moveTo=new"), 409)  # where new devices go
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "empty"}), 201)
    await ok(api.delete("/v1/tenants/acme/groups/empty"), 204)


async def test_devices_move_between_groups_all_or_nothing(api: httpx.AsyncClient) -> None:
    await _tenant(api)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "lab"}), 201)
    for i in range(3):
        await ok(api.post("/v1/tenants/acme/devices", json={"id": f"d{i}"}), 201)
    r = await api.post("/v1/tenants/acme/groups/lab/devices", json={"devices": ["d0", "ghost"]})
    assert r.status_code == 404 and "ghost" in r.json()["message"]
    assert (await ok(api.get("/v1/tenants/acme/devices/d0")))["group"] == "default"  # nothing moved
    moved = await ok(api.post("/v1/tenants/acme/groups/lab/devices", json={"devices": ["d0", "d1", "d1"]}))
    assert moved == {"moved": ["d0", "d1"]}
    again = await ok(api.post("/v1/tenants/acme/groups/lab/devices", json={"devices": ["d0", "d2"]}))
    assert again == {"moved": ["d2"]}  # d0 was there already
    assert (await ok(api.get("/v1/tenants/acme/groups/lab")))["devices"] == 3


async def test_a_trusted_ca_provisions_into_an_existing_group_only(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await _tenant(api)
    ca = make_ca(tmp_path, "Acme CA")
    r = await trust(api, "acme", ca, group="nowhere")
    assert r.status_code == 422 and r.json()["field"] == "group"
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "field"}), 201)
    created = await ok(trust(api, "acme", ca, group="field"), 201)
    r = await api.delete("/v1/tenants/acme/groups/field")
    assert r.status_code == 409 and "trusted CA" in r.json()["message"]
    await ok(api.delete("/v1/tenants/acme/groups/field?moveTo=default"), 204)
    assert (await ok(api.get(f"/v1/tenants/acme/trusted-cas/{created['id']}")))["group"] == "default"


async def test_groups_of_another_tenant_are_not_reachable(api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "a1")
    await _tenant(api, "globex")
    await ok(api.post("/v1/tenants/globex/groups", json={"id": "secret"}), 201)
    assert (await api.get("/v1/tenants/acme/groups/secret")).status_code == 404
    assert (await api.post("/v1/tenants/globex/groups/secret/devices", json={"devices": ["a1"]})).status_code == 404
    assert (await api.get("/v1/tenants/nobody/groups")).status_code == 404
