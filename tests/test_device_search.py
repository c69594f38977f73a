"""Issue 10 point 5: the device list pages with a cursor and filters; unknown filters are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, ok, wait_until


async def _ids(api: httpx.AsyncClient, **params: object) -> list[str]:
    page = await ok(api.get("/v1/tenants/acme/devices", params={k.replace("__", "."): v for k, v in params.items()}))
    return [d["id"] for d in page["devices"]]


async def test_filters_combine_and_page(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "lab"}), 201)
    for i in range(6):
        body = {
            "id": f"sensor-{i}",
            "group": "lab" if i % 2 else "default",
            "appVersion": "v2" if i < 3 else "v1",
            "attributes": {"site": "kyiv" if i < 4 else "lviv"},
        }
        await ok(api.post("/v1/tenants/acme/devices", json=body), 201)
    await ok(api.post("/v1/tenants/acme/devices", json={"id": "pump-1"}), 201)
    await ok(api.patch("/v1/tenants/acme/devices/sensor-5", json={"enabled": False}))
    token = (await ok(api.post("/v1/tenants/acme/devices/sensor-1/tokens"), 201))["token"]
    await ok(api.put("/v1/tenants/acme/devices/sensor-3/metadata", json={"city": "Kyiv", "floor": 3}))
    assert await _ids(api, group="lab") == ["sensor-1", "sensor-3", "sensor-5"]
    assert await _ids(api, group="lab", appVersion="v2") == ["sensor-1"]
    assert await _ids(api, state="registered") == ["sensor-1"]  # the one with a credential
    assert await _ids(api, enabled="false") == ["sensor-5"]
    assert await _ids(api, attr__site="lviv") == ["sensor-4", "sensor-5"]
    assert await _ids(api, metadata__city="Kyiv") == ["sensor-3"]
    assert await _ids(api, metadata__floor="3") == ["sensor-3"]  # a number, by its JSON text
    assert await _ids(api, q="pump") == ["pump-1"]
    assert await _ids(api, autoProvisioned="true") == []
    assert len(await _ids(api, connected="false")) == 7
    async with mqtt(gateway, token):
        assert await _ids(api, connected="true") == ["sensor-1"]
        assert await _ids(api, lastSeenAfter=(datetime.now(UTC) - timedelta(hours=1)).isoformat()) == ["sensor-1"]

    async def gone() -> bool:
        return await _ids(api, connected="true") == []

    await wait_until(gone)
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert len(await _ids(api, lastSeenBefore=future)) == 7  # never seen counts as before
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert "sensor-1" not in await _ids(api, lastSeenBefore=past)
    # the cursor walks every page once, filters held
    seen, cursor = [], None
    while True:
        params = {"q": "sensor", "limit": 2, **({"after": cursor} if cursor else {})}
        page = await ok(api.get("/v1/tenants/acme/devices", params=params))
        seen += [d["id"] for d in page["devices"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"sensor-{i}" for i in range(6)]


async def test_unknown_or_bad_filters_are_422_not_ignored(api: httpx.AsyncClient) -> None:
    await make_device(api)
    for params in (
        {"colour": "red"},
        {"Group": "lab"},
        {"state": "sleeping"},
        {"enabled": "maybe"},
        {"limit": "0"},
        {"limit": "1001"},
        {"lastSeenBefore": "yesterday"},
        {"attr.bad key": "x"},
        {"metadata.bad-key": "x"},
    ):
        r = await api.get("/v1/tenants/acme/devices", params=params)
        assert r.status_code == 422, (params, r.text)
    assert (await api.get("/v1/tenants/nobody/devices")).status_code == 404


async def test_filter_values_are_data_not_sql(api: httpx.AsyncClient) -> None:
    await make_device(api)
    for value in ("' OR 1=1 --", '"); DROP TABLE devices; --', "%", "_", "\\"):
        for name in ("group", "q", "appVersion", "attr.site", "metadata.city"):
            assert await _ids(api, **{name.replace(".", "__"): value}) == [], (name, value)
    assert await _ids(api) == ["dev-1"]
