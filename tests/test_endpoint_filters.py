"""Issue 10 point 6: endpoint filters (Kaa EPR, 18/EFE) through the real API, real MQTT devices and
the tenant's event topics; members change incrementally, for the device that changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_json, ok, outbox_events, restarted_gateway, wait_until

FILTERS = "/v1/tenants/acme/endpoint-filters"


async def _fleet(api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "lab"}), 201)
    devices = [
        {"id": "k1", "appVersion": "v1", "attributes": {"site": "kyiv"}},
        {"id": "k2", "appVersion": "v2", "group": "lab", "attributes": {"site": "kyiv"}},
        {"id": "l1", "appVersion": "v3", "attributes": {"site": "lviv"}},
        {"id": "bare"},
    ]
    for body in devices:
        await ok(api.post("/v1/tenants/acme/devices", json=body), 201)
    await ok(api.put("/v1/tenants/acme/devices/k1/metadata", json={"city": "Kyiv", "floor": 3, "online": True}))
    await ok(api.put("/v1/tenants/acme/devices/k2/metadata", json={"city": "Kyiv", "floor": "3"}))
    await ok(api.put("/v1/tenants/acme/devices/l1/metadata", json={"city": "Lviv", "floor": 7, "note": None}))


async def _active(api: httpx.AsyncClient, filter_id: str, tenant: str = "acme") -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def active() -> bool:
        found.update(await ok(api.get(f"/v1/tenants/{tenant}/endpoint-filters/{filter_id}")))
        return found["state"] == "active"

    await wait_until(active, timeout=10)
    return found


async def _members(api: httpx.AsyncClient, filter_id: str, tenant: str = "acme") -> list[str]:
    ids: list[str] = []
    after = ""
    while True:
        page = await ok(
            api.get(f"/v1/tenants/{tenant}/endpoint-filters/{filter_id}/endpoints", params={"after": after})
        )
        ids += [e["endpointId"] for e in page["endpoints"]]
        if page["next"] is None:
            return ids
        after = page["next"]


async def _matches(api: httpx.AsyncClient, query: dict[str, Any], filter_id: str = "f") -> list[str]:
    await ok(api.post(FILTERS, json={"id": filter_id, "query": query}), 201)
    await _active(api, filter_id)
    return await _members(api, filter_id)


async def _changes(gateway: Gateway, tenant: str = "acme") -> list[tuple[str, str, str]]:
    """(subject, filterId, endpointId) of the endpoint/matched|unmatched events, in order."""
    return [
        (e["subject"].removeprefix("endpoint/"), e["payload"]["filterId"], e["payload"]["endpointId"])
        for e in await outbox_events(gateway, tenant)
        if e["subject"] in ("endpoint/matched", "endpoint/unmatched")
    ]


async def test_the_issues_example_query_and_every_operator(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    example = {"metadata.city": "Kyiv", "connected": False, "appVersion": {"$in": ["v1", "v2"]}}
    assert await _matches(api, example, "example") == ["k1", "k2"]
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["bare", "k1", "k2", "l1"]),
        ({"group": "lab"}, ["k2"]),
        ({"group": {"$ne": "lab"}}, ["bare", "k1", "l1"]),
        ({"state": "enrolled", "enabled": True}, ["bare", "k1", "k2", "l1"]),
        ({"appVersion": None}, ["bare"]),
        ({"appVersion": {"$exists": True, "$nin": ["v1"]}}, ["k2", "l1"]),
        ({"appVersion": {"$gte": "v2"}}, ["k2", "l1"]),
        ({"attr.site": "kyiv"}, ["k1", "k2"]),
        ({"attr.site": {"$exists": False}}, ["bare"]),
        ({"metadata.floor": 3}, ["k1"]),  # a number never matches the string "3"
        ({"metadata.floor": "3"}, ["k2"]),
        ({"metadata.floor": {"$gt": 2, "$lte": 7}}, ["k1", "l1"]),  # numbers compare with numbers only
        ({"metadata.floor": {"$lt": "4"}}, ["k2"]),
        ({"metadata.online": True}, ["k1"]),
        ({"metadata.note": None}, ["l1"]),
        ({"metadata.note": {"$exists": True}}, ["l1"]),
        ({"metadata.city": {"$ne": "Kyiv"}}, ["bare", "l1"]),  # $ne also matches a device without the key
        ({"metadata.city": {"$nin": ["Kyiv", "Lviv"]}}, ["bare"]),
        ({"$or": [{"group": "lab"}, {"metadata.city": "Lviv"}]}, ["k2", "l1"]),
        ({"$and": [{"attr.site": "kyiv"}, {"$or": [{"metadata.floor": 3}, {"appVersion": "v2"}]}]}, ["k1", "k2"]),
    ]
    for i, (query, expected) in enumerate(cases):
        assert await _matches(api, query, f"c{i}") == expected, query


@pytest.mark.parametrize(
    ("query", "pointer"),
    [
        ([], "/query"),
        ({"colour": "red"}, "/query/colour"),
        ({"state": "lost"}, "/query/state"),
        ({"state": 3}, "/query/state"),
        ({"enabled": "yes"}, "/query/enabled"),
        ({"connected": {"$gt": True}}, "/query/connected/$gt"),
        ({"appVersion": ["v1", "v2"]}, "/query/appVersion"),
        ({"appVersion": {"$regex": "v.*"}}, "/query/appVersion/$regex"),
        ({"appVersion": {}}, "/query/appVersion"),
        ({"metadata.city": {"$in": []}}, "/query/metadata.city/$in"),
        ({"metadata.city": {"$in": "Kyiv"}}, "/query/metadata.city/$in"),
        ({"metadata.city": {"$in": ["Kyiv", {"a": 1}]}}, "/query/metadata.city/$in/1"),
        ({"metadata.floor": {"$gt": None}}, "/query/metadata.floor/$gt"),
        ({"metadata.floor": {"$exists": 1}}, "/query/metadata.floor/$exists"),
        ({"metadata.floor": 2**64}, "/query/metadata.floor"),
        ({"metadata.x'); DROP TABLE devices; --": 1}, "/query/metadata.x'); DROP TABLE devices; --"),
        ({'attr.a"]': 1}, '/query/attr.a"]'),
        ({"attr.a/b": 1}, "/query/attr.a~1b"),
        ({"$or": [{"group": "lab"}, {"$nor": []}]}, "/query/$or/1/$nor"),
        ({"$and": {}}, "/query/$and"),
        ({"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{}]}]}]}]}]}]}]}]}, "/query/$or/0"),
        ({f"attr.k{i}": "v" for i in range(65)}, "/query/attr.k64"),
        ({"group": {"$in": [f"g{i}" for i in range(300)]}}, "/query/group/$in/256"),
    ],
)
async def test_a_query_outside_the_language_is_a_422_naming_its_place(
    api: httpx.AsyncClient, query: Any, pointer: str
) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    r = await api.post(FILTERS, json={"id": "f", "query": query})
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(pointer) if isinstance(query, dict) else r.json()["field"] == "query"
    assert (await ok(api.get(FILTERS))) == []  # nothing saved


async def test_injection_attempts_are_bound_values_or_refused_keys(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    hostile = "Kyiv' OR '1'='1"
    await ok(api.put("/v1/tenants/acme/devices/bare/metadata", json={"city": hostile}))
    for value in ("' OR 1=1 --", "Kyiv') OR 1=1 --", '"); DELETE FROM devices; --', "%", "*"):
        assert await _matches(api, {"metadata.city": value}, f"v{abs(hash(value))}") == []
        assert await _matches(api, {"attr.site": {"$in": [value]}}, f"a{abs(hash(value))}") == []
    assert await _matches(api, {"metadata.city": hostile}, "exact") == ["bare"]  # the text itself, as data
    r = await api.post(FILTERS, content=b'{"id": "s", "query": {"metadata.city": "\\ud800"}}')
    assert r.status_code == 422  # a lone surrogate cannot be bound as text: refused, not a 500
    assert len((await ok(api.get("/v1/tenants/acme/devices")))["devices"]) == 4


async def test_members_change_for_the_device_that_changed_with_18_efe_events(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    await _fleet(api)
    await ok(api.post(FILTERS, json={"id": "kyiv-online", "query": {"metadata.city": "Kyiv", "connected": True}}), 201)
    await ok(api.post(FILTERS, json={"id": "lab", "query": {"group": "lab", "attr.site": "kyiv"}}), 201)
    activated = await _active(api, "kyiv-online")
    assert activated["matching"] == 0 and activated["activatedAt"] is not None
    assert (await _active(api, "lab"))["matching"] == 1
    events = await outbox_events(gateway, "acme", "filter/activated")
    assert [(e["payload"]["filterId"], e["payload"]["matching"]) for e in events] == [("kyiv-online", 0), ("lab", 1)]
    assert await _changes(gateway) == []  # the first scan fills the list silently: activated says read it

    token = (await ok(api.post("/v1/tenants/acme/devices/k1/tokens"), 201))["token"]
    async with mqtt(gateway, token, client_id="k1"):  # connection: k1 enters
        await wait_until(lambda: _has_change(gateway, ("matched", "kyiv-online", "k1")))
        assert await _members(api, "kyiv-online") == ["k1"]
        async with mqtt(gateway, token, client_id="k1b"):  # a second session changes nothing
            pass
        # 10/EPMP from the device itself: leaves Kyiv, so it leaves the filter
        async with mqtt(gateway, token, client_id="k1c") as device:  # PUBACK once the write commits
            await device.publish(f"kp1/v1/epmx/{token}/update/keys/1", b'{"city": "Odesa"}', qos=1)
        await wait_until(lambda: _has_change(gateway, ("unmatched", "kyiv-online", "k1")))
    await ok(api.patch("/v1/tenants/acme/devices/k1", json={"group": "lab"}))  # group: enters "lab"
    await ok(api.patch("/v1/tenants/acme/devices/k2", json={"attributes": {"site": "lviv"}}))  # attribute: leaves
    await wait_until(lambda: _has_change(gateway, ("unmatched", "lab", "k2")))
    await ok(api.delete("/v1/tenants/acme/devices/k1"), 204)  # deleted: leaves
    await wait_until(lambda: _has_change(gateway, ("unmatched", "lab", "k1")))
    assert await _changes(gateway) == [
        ("matched", "kyiv-online", "k1"),
        ("unmatched", "kyiv-online", "k1"),
        ("matched", "lab", "k1"),
        ("unmatched", "lab", "k2"),
        ("unmatched", "lab", "k1"),
    ]
    matched = (await outbox_events(gateway, "acme", "endpoint/matched"))[0]["payload"]
    assert matched["appVersionName"] == "v1" and matched["originatorReplicaId"] == gateway.settings.node_id
    assert await _members(api, "lab") == [] and await _members(api, "kyiv-online") == []


async def _has_change(gateway: Gateway, change: tuple[str, str, str]) -> bool:
    return change in await _changes(gateway)


async def test_lifecycle_enabled_and_disconnects_move_devices(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    await ok(api.post(FILTERS, json={"id": "ready", "query": {"state": "registered", "enabled": True}}), 201)
    await ok(api.post(FILTERS, json={"id": "online", "query": {"connected": True}}), 201)
    await _active(api, "ready")
    await _active(api, "online")
    token = (await ok(api.post("/v1/tenants/acme/devices/l1/tokens"), 201))["token"]  # enrolled -> registered
    await wait_until(lambda: _has_change(gateway, ("matched", "ready", "l1")))
    async with mqtt(gateway, token, client_id="l1"):
        await wait_until(lambda: _has_change(gateway, ("matched", "online", "l1")))
    await wait_until(lambda: _has_change(gateway, ("unmatched", "online", "l1")))  # a clean disconnect
    async with mqtt(gateway, token, client_id="l1"):
        await wait_until(lambda: _changes_count(gateway, ("matched", "online", "l1"), 2))
        await ok(api.patch("/v1/tenants/acme/devices/l1", json={"enabled": False}))  # kicked, and not ready
    await wait_until(lambda: _has_change(gateway, ("unmatched", "ready", "l1")))
    await wait_until(lambda: _changes_count(gateway, ("unmatched", "online", "l1"), 2))
    assert await _members(api, "online") == [] and await _members(api, "ready") == []


async def _changes_count(gateway: Gateway, change: tuple[str, str, str], count: int) -> bool:
    return (await _changes(gateway)).count(change) == count


async def test_only_changed_devices_are_evaluated(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """The mechanism, pinned: a change notes one device; the evaluator reads only the notes."""
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants", json={"id": "quiet"}), 201)
    csv = "deviceId,appVersion\n" + "".join(f"d{i:04},v1\n" for i in range(1500))
    job = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)

    async def imported() -> bool:
        return (await ok(api.get(f"/v1/tenants/acme/device-imports/{job['jobId']}")))["state"] == "succeeded"

    await wait_until(imported, timeout=30)
    await ok(api.post(FILTERS, json={"id": "v2", "query": {"appVersion": "v2"}}), 201)
    assert (await _active(api, "v2"))["matching"] == 0
    assert gateway.filters is not None
    await gateway.filters.stop()  # hold the evaluator to look at its input
    await ok(api.patch("/v1/tenants/acme/devices/d0777", json={"appVersion": "v2"}))
    await ok(api.patch("/v1/tenants/acme/devices/d0001", json={"attributes": {}}))  # unchanged: no note
    await ok(api.post("/v1/tenants/quiet/devices", json={"id": "q1"}), 201)  # a tenant without filters
    noted = await gateway.registry.db.read_all("SELECT tenant_id, device_id FROM endpoint_filter_dirty")
    assert [tuple(r) for r in noted] == [("acme", "d0777")]
    assert await gateway.registry.endpoint_filters.evaluate_changed(node="n") == 1
    assert await _changes(gateway) == [("matched", "v2", "d0777")]
    assert await gateway.registry.endpoint_filters.evaluate_changed(node="n") == 0


async def test_replace_and_delete_say_deactivated(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    await ok(api.post(FILTERS, json={"id": "f", "query": {"group": "lab"}}), 201)
    await _active(api, "f")
    replaced = await ok(api.put(f"{FILTERS}/f", json={"query": {"group": "default"}}))
    assert replaced["query"] == {"group": "default"}
    assert (await _active(api, "f"))["matching"] == 3
    assert await _members(api, "f") == ["bare", "k1", "l1"]
    await ok(api.delete(f"{FILTERS}/f"), 204)
    assert (await api.get(f"{FILTERS}/f/endpoints")).status_code == 404
    subjects = [(e["subject"], e["payload"].get("reason")) for e in await outbox_events(gateway, "acme")]
    assert [s for s in subjects if s[0].startswith("filter/")] == [
        ("filter/activated", None),
        ("filter/deactivated", "updated"),
        ("filter/activated", None),
        ("filter/deactivated", "deleted"),
    ]
    assert await _changes(gateway) == []  # a rescan and a delete speak through activated/deactivated
    assert (await api.put(f"{FILTERS}/f", json={"query": {}})).status_code == 404


async def test_ids_limits_tenants_and_isolation(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    await ok(api.post("/v1/tenants", json={"id": "globex"}), 201)
    await ok(api.post("/v1/tenants/globex/devices", json={"id": "k1", "appVersion": "v1"}), 201)
    assert (await api.post("/v1/tenants/nobody/endpoint-filters", json={"id": "f", "query": {}})).status_code == 404
    assert (await api.get("/v1/tenants/nobody/endpoint-filters")).status_code == 404
    assert (await api.post(FILTERS, json={"id": "bad/id", "query": {}})).status_code == 422
    assert (await api.post(FILTERS, json={"id": "f", "query": {}, "extra": 1})).status_code == 422
    assert await _matches(api, {"appVersion": "v1"}) == ["k1"]  # acme's k1 only
    assert (await api.post(FILTERS, json={"id": "f", "query": {}})).status_code == 409
    assert (await api.get("/v1/tenants/globex/endpoint-filters/f")).status_code == 404
    assert await outbox_events(gateway, "globex", "filter/activated") == []
    for i in range(99):
        await ok(api.post(FILTERS, json={"id": f"more{i}", "query": {"group": f"g{i}"}}), 201)
    r = await api.post(FILTERS, json={"id": "one-too-many", "query": {}})
    assert r.status_code == 409 and "100" in r.json()["message"]
    await _active(api, "more98")
    await ok(api.patch("/v1/tenants/acme/devices/k1", json={"appVersion": "v9"}))  # 100 filters, one query
    await wait_until(lambda: _has_change(gateway, ("unmatched", "f", "k1")))


async def test_events_reach_the_tenants_consumer_over_mqtt(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    account = await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "ops"}), 201)
    async with mqtt(gateway, account["username"], account["password"], client_id="ops") as ops:
        await ops.subscribe("$gateway/events/acme/#", qos=1)
        await ok(api.post(FILTERS, json={"id": "lviv", "query": {"attr.site": "lviv"}}), 201)
        body = await _next_event(ops, "filter/activated")
        assert (body["filterId"], body["matching"]) == ("lviv", 1)
        await ok(api.patch("/v1/tenants/acme/devices/bare", json={"attributes": {"site": "lviv"}}))
        body = await _next_event(ops, "endpoint/matched")
        assert (body["filterId"], body["endpointId"]) == ("lviv", "bare")


async def _next_event(consumer: aiomqtt.Client, subject: str) -> dict[str, Any]:
    """The next event with this subject, skipping the tenant's others (devices created, metadata...)."""
    while True:
        topic, body = await next_json(consumer, timeout=10)
        if topic == f"$gateway/events/acme/{subject}":
            return body  # type: ignore[no-any-return]


async def test_noted_changes_survive_a_restart(tmp_path: Path) -> None:
    """A note is written with the change: a gateway that stops before evaluating reports it later."""
    data_dir = tmp_path / "data"
    async with (
        restarted_gateway(data_dir, "node-a") as gw,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.ports['api']}", headers={"Authorization": f"Bearer {gw.admin_token}"}
        ) as api,
    ):
        await make_device(api, "acme", "d1", app_version="v1")
        await ok(api.post(FILTERS, json={"id": "v2", "query": {"appVersion": "v2"}}), 201)
        await _active(api, "v2")
        assert gw.filters is not None
        await gw.filters.stop()
        await ok(api.patch("/v1/tenants/acme/devices/d1", json={"appVersion": "v2"}))
    async with restarted_gateway(data_dir, "node-a") as gw:
        await wait_until(lambda: _has_change(gw, ("matched", "v2", "d1")))
        assert await _changes(gw) == [("matched", "v2", "d1")]


async def test_costly_queries_get_small_transactions_and_scans_take_turns(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """Found by attack: a 256-value `$in` counted as one comparison, so one scan transaction held the
    writer for seconds; and the oldest pending filter always went first, so one tenant's costly (or
    replaced) filter kept another tenant's pending for minutes."""
    from registry.endpoint_filters import EVALUATION_BUDGET
    from registry.filter_query import compile_query

    many = {"metadata.city": {"$in": [f"city-{i}" for i in range(256)]}}
    assert compile_query(many).cost == 256
    assert gateway.filters is not None
    await gateway.filters.stop()
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants", json={"id": "small"}), 201)
    csv = "deviceId\n" + "".join(f"d{i:03}\n" for i in range(100))
    job = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)

    async def imported() -> bool:
        return (await ok(api.get(f"/v1/tenants/acme/device-imports/{job['jobId']}")))["state"] == "succeeded"

    await wait_until(imported, timeout=30)
    await ok(api.post(FILTERS, json={"id": "costly", "query": many}), 201)
    store = gateway.registry.endpoint_filters
    assert await store.scan_pending(node="n")  # one chunk of the costly filter
    row = await gateway.registry.db.read_one("SELECT scan_after FROM endpoint_filters WHERE id = 'costly'")
    assert row is not None and row[0] == f"d{EVALUATION_BUDGET // 256 - 1:03}"  # 7 devices, not 100
    await ok(api.post("/v1/tenants/small/devices", json={"id": "s1"}), 201)
    await ok(api.post("/v1/tenants/small/endpoint-filters", json={"id": "all", "query": {}}), 201)
    assert await store.scan_pending(node="n")  # the small tenant's turn comes next, not after 14 chunks
    assert (await ok(api.get("/v1/tenants/small/endpoint-filters/all")))["state"] == "active"
    assert (await ok(api.get(f"{FILTERS}/costly")))["state"] == "pending"
    await ok(api.delete(f"{FILTERS}/costly"), 204)  # never activated: nothing to deactivate
    assert await outbox_events(gateway, "acme", "filter/deactivated") == []


async def test_a_string_with_nul_is_not_its_prefix(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """Found by attack: json_extract ends a string at U+0000, so `admin\\u0000-not-really` matched "admin"."""
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d1", "attributes": {"role": "admin\u0000-x"}}), 201)
    await ok(api.put("/v1/tenants/acme/devices/d1/metadata", json={"role": "admin\u0000-not-really"}))
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "d2", "attributes": {"role": "admin"}}), 201)
    await ok(api.put("/v1/tenants/acme/devices/d2/metadata", json={"role": "admin"}))
    assert await _matches(api, {"metadata.role": "admin"}, "m") == ["d2"]
    assert await _matches(api, {"attr.role": "admin"}, "a") == ["d2"]
    assert await _matches(api, {"metadata.role": {"$ne": "admin"}}, "n") == ["d1"]
    r = await api.post(FILTERS, json={"id": "nul", "query": {"metadata.role": "admin\u0000-not-really"}})
    assert r.status_code == 422 and r.json()["field"] == "/query/metadata.role"


async def test_unmatched_for_a_deleted_device_names_its_app_version(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await _fleet(api)
    await ok(api.post(FILTERS, json={"id": "v1", "query": {"appVersion": "v1"}}), 201)
    await _active(api, "v1")
    await ok(api.delete("/v1/tenants/acme/devices/k1"), 204)
    await wait_until(lambda: _has_change(gateway, ("unmatched", "v1", "k1")))
    (event,) = await outbox_events(gateway, "acme", "endpoint/unmatched")
    assert event["payload"]["appVersionName"] == "v1"
