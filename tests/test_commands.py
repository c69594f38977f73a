"""Issue 9, southbound: 11/CEP commands from REST and from applications over MQTT, to devices and back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import (
    make_device,
    mqtt,
    next_json,
    next_message,
    ok,
    outbox_events,
    restarted_gateway,
    served_gateway,
    wait_until,
)
from .test_events import service_account
from .wire import RawClient, connect_packet, subscribe_packet

RESULTS = "$gateway/commands/acme/+/+/result"


def cex(token: str, rest: str, app_version: str = "v1") -> str:
    return f"kp1/{app_version}/cex/{token}/{rest}"


async def _state(api: httpx.AsyncClient, command_id: int, device: str = "dev-1", kind: str = "reboot") -> str:
    body = await ok(api.get(f"/v1/tenants/acme/devices/{device}/commands/{kind}/{command_id}"))
    return str(body["state"])


async def _is(api: httpx.AsyncClient, command_id: int, state: str) -> bool:
    return await _state(api, command_id) == state


async def test_a_rest_command_round_trip(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with mqtt(gateway, token) as device:
        await device.subscribe(cex(token, "command/reboot/status"), qos=1)
        await device.subscribe(cex(token, "result/reboot/#"), qos=1)
        call = asyncio.create_task(
            api.post("/v1/tenants/acme/devices/dev-1/commands/reboot", json={"payload": {"delay": 5}})
        )
        topic, commands = await next_json(device)  # pushed: the device subscribed, so it observes
        assert topic == cex(token, "command/reboot/status")
        assert commands == [{"id": 1, "payload": {"delay": 5}}]
        # marked in the registry right after the push is queued: the device may read it first
        await wait_until(lambda: _is(api, 1, "delivered"))
        result = [{"id": 1, "statusCode": 200, "reasonPhrase": "rebooting", "payload": {"eta": 5}}]
        await device.publish(cex(token, "result/reboot/9"), json.dumps(result).encode(), qos=1)
        assert await next_json(device) == (cex(token, "result/reboot/9/status"), None)
        r = await call
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": 1,
        "state": "succeeded",
        "statusCode": 200,
        "reasonPhrase": "rebooting",
        "payload": {"eta": 5},
    }
    stored = await ok(api.get("/v1/tenants/acme/devices/dev-1/commands/reboot/1"))
    assert stored["state"] == "succeeded" and stored["commandPayload"] == {"delay": 5} and stored["origin"] == "api"
    assert stored["deliveredAt"] is not None and stored["completedAt"] is not None
    events = await outbox_events(gateway, "acme", "command/succeeded")
    assert [e["payload"]["commandId"] for e in events] == [1]
    assert events[0]["payload"]["endpointId"] == "dev-1" and events[0]["payload"]["payload"] == {"eta": 5}
    # ids count up per device and type
    second = await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={}), 202)
    other = await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/blink?wait=false", json={}), 202)
    assert (second["id"], other["id"]) == (2, 1) and second["state"] == "pending"


async def test_an_application_commands_over_mqtt(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    account = await service_account(api)
    async with (
        mqtt(gateway, account["username"], account["password"], client_id="app") as app,
        mqtt(gateway, token) as device,
    ):
        await app.subscribe(RESULTS, qos=1)
        await device.subscribe(cex(token, "command/+/status"), qos=1)
        await app.publish(
            "$gateway/commands/acme/dev-1/open", b'{"id": 40, "payload": "door", "timeoutMs": 5000}', qos=1
        )
        topic, commands = await next_json(device)
        assert (topic, commands) == (cex(token, "command/open/status"), [{"id": 40, "payload": "door"}])
        await device.publish(cex(token, "result/open"), b'[{"id": 40, "statusCode": 500, "payload": "jammed"}]', qos=1)
        topic, result = await next_json(app)
        # an id at or below the last one is refused, on the result topic
        await app.publish("$gateway/commands/acme/dev-1/open", b'{"id": 40, "payload": 1}', qos=1)
        refused_topic, refused = await next_json(app)
        # and so is a command to a device of another tenant (the ACL drops it: no command is made)
        await app.publish("$gateway/commands/globex/dev-1/open", b'{"payload": 1}', qos=1)
    assert topic == "$gateway/commands/acme/dev-1/open/result"
    assert result == {"id": 40, "state": "failed", "statusCode": 500, "reasonPhrase": None, "payload": "jammed"}
    assert refused_topic == topic and refused["statusCode"] == 409 and refused["state"] == "refused"
    stored = await ok(api.get("/v1/tenants/acme/devices/dev-1/commands/open/40"))
    assert stored["origin"] == "service:analytics"
    assert [e["payload"]["statusCode"] for e in await outbox_events(gateway, "acme", "command/failed")] == [500]
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["publishesDenied"] >= 1 and metrics["commandsInvoked"] == 1


async def test_a_command_for_an_offline_device_waits_until_it_asks(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    accepted = await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={"payload": 1}), 202)
    assert await _state(api, accepted["id"]) == "pending"
    async with mqtt(gateway, token) as device:
        # a request (here with observe off and a request id) answers with every outstanding command
        await device.subscribe(cex(token, "command/reboot/#"), qos=1)
        topic, commands = await next_json(device)  # subscribing delivers what waited
        assert commands == [{"id": 1, "payload": 1}] and topic == cex(token, "command/reboot/status")
        await device.publish(cex(token, "command/reboot/3"), b'{"observe": false}', qos=1)
        assert await next_json(device) == (cex(token, "command/reboot/3/status"), [{"id": 1, "payload": 1}])
        await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={"payload": 2}), 202)
        assert await next_message(device, 0.5) is None  # observe off: not pushed
        await device.publish(cex(token, "command/reboot"), b"", qos=1)  # no request id: the status topic
        topic, commands = await next_json(device)
        assert topic == cex(token, "command/reboot/status")
        assert commands == [{"id": 1, "payload": 1}, {"id": 2, "payload": 2}]
        await device.publish(
            cex(token, "result/reboot"), b'[{"id": 1, "statusCode": 200}, {"id": 2, "statusCode": 204}]', qos=1
        )
        await wait_until(lambda: _is(api, 2, "succeeded"))
    assert await _state(api, 1) == "succeeded"


async def test_an_unanswered_command_expires_at_its_timeout(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    account = await service_account(api)
    async with (
        mqtt(gateway, account["username"], account["password"], client_id="app") as app,
        mqtt(gateway, token) as device,
    ):
        await app.subscribe(RESULTS, qos=1)
        await device.subscribe(cex(token, "command/reboot/status"), qos=1)
        await device.subscribe(cex(token, "result/reboot/#"), qos=1)
        r = await api.post("/v1/tenants/acme/devices/dev-1/commands/reboot", json={"timeoutMs": 1000})
        assert r.status_code == 504, r.text
        assert r.json()["id"] == 1 and r.json()["state"] == "expired" and r.json()["error"] == "timeout"
        _, result = await next_json(app)
        assert result["state"] == "expired" and result["statusCode"] == 504
        await device.publish(cex(token, "result/reboot/5"), b'[{"id": 1, "statusCode": 200}]', qos=1)
        topic, error = await next_json(device, 3)
        while topic.endswith("command/reboot/status"):  # the push that came before
            topic, error = await next_json(device, 3)
    assert topic == cex(token, "result/reboot/5/error") and error["statusCode"] == 409
    assert "expired" in error["reasonPhrase"]
    assert await _state(api, 1) == "expired"
    events = await outbox_events(gateway, "acme", "command/expired")
    assert [e["payload"]["commandId"] for e in events] == [1]


async def test_malformed_and_unknown_results_change_nothing_else(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={}), 202)
    async with mqtt(gateway, token) as device:
        await device.subscribe(cex(token, "result/reboot/#"), qos=1)
        bad = [
            b"not json",
            b"{}",
            b"[]",
            b'[{"id": 1}]',
            b'[{"id": 1, "statusCode": 200, "extra": 1}]',
            b'[{"id": "1", "statusCode": 200}]',
            b'[{"id": 1, "statusCode": 99}]',
            b'[{"id": 1, "statusCode": true}]',
            b'[{"id": 1, "statusCode": 200}, {"id": 1, "statusCode": 200}]',
            b'[{"id": 1, "statusCode": 200, "reasonPhrase": 5}]',
        ]
        for i, payload in enumerate(bad, start=1):
            await device.publish(cex(token, f"result/reboot/{i}"), payload, qos=1)
            topic, error = await next_json(device)
            assert topic == cex(token, f"result/reboot/{i}/error") and error["statusCode"] == 400, (payload, error)
        assert await _state(api, 1) == "pending"  # none of it touched the command
        # an unknown id is reported; the known one in the same request is recorded
        await device.publish(
            cex(token, "result/reboot/20"), b'[{"id": 1, "statusCode": 200}, {"id": 77, "statusCode": 200}]', qos=1
        )
        topic, error = await next_json(device)
        assert (
            topic == cex(token, "result/reboot/20/error")
            and error["statusCode"] == 404
            and "77" in error["reasonPhrase"]
        )
        assert await _state(api, 1) == "succeeded"
        # the same result again (a redelivery) is fine; a different one for a finished command is 409
        await device.publish(cex(token, "result/reboot/21"), b'[{"id": 1, "statusCode": 200}]', qos=1)
        assert await next_json(device) == (cex(token, "result/reboot/21/status"), None)
        await device.publish(cex(token, "result/reboot/22"), b'[{"id": 1, "statusCode": 500}]', qos=1)
        topic, error = await next_json(device)
        assert error["statusCode"] == 409
        # unknown resources and types
        await device.publish(cex(token, "reboot/23"), b"[]", qos=1)
        await device.subscribe(cex(token, "#"), qos=1)
        for path, status in [("reboot/23", 404), ("command/bad.type/24", 400), ("command/25", 404)]:
            await device.publish(cex(token, path), b"", qos=1)
            topic, error = await next_json(device)
            assert topic == cex(token, f"{path}/error") and error["statusCode"] == status, (path, error)


async def test_invocations_are_validated(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    base = "/v1/tenants/acme/devices/dev-1/commands"
    for body, status in [
        ({"timeoutMs": 999}, 422),
        ({"timeoutMs": 300_001}, 422),
        ({"payload": "x" * 70_000}, 413),
        ({"unknown": 1}, 422),
    ]:
        r = await api.post(f"{base}/reboot?wait=false", json=body)
        assert r.status_code == status, (body, r.text)
    assert (await api.post(f"{base}/123?wait=false", json={})).status_code == 422  # digits only: a request id
    assert (await api.post(f"{base}/a.b?wait=false", json={})).status_code == 422
    assert (await api.post("/v1/tenants/acme/devices/nobody/commands/reboot", json={})).status_code == 404
    assert (await api.post("/v1/tenants/globex/devices/dev-1/commands/reboot", json={})).status_code == 404
    assert (await api.get(f"{base}/reboot/1")).status_code == 404


@pytest.mark.gateway_settings(commands_max_outstanding=2)
async def test_outstanding_commands_are_bounded_per_device(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    await make_device(api, "acme", "other")
    base = "/v1/tenants/acme/devices/dev-1/commands"
    for _ in range(2):
        await ok(api.post(f"{base}/reboot?wait=false", json={}), 202)
    r = await api.post(f"{base}/blink?wait=false", json={})
    assert r.status_code == 429 and r.json()["error"] == "too_many_requests"
    await ok(api.post("/v1/tenants/acme/devices/other/commands/reboot?wait=false", json={}), 202)


async def test_pending_commands_survive_a_crash(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with served_gateway(data_dir, "node-a") as served:
        async with served.api() as api:
            token = await make_device(api)
            for payload in ("first", "second"):
                r = await api.post(
                    "/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false",
                    json={"payload": payload, "timeoutMs": 120_000},
                )
                assert r.status_code == 202
            short = await api.post("/v1/tenants/acme/devices/dev-1/commands/blink?wait=false", json={"timeoutMs": 1000})
            assert short.status_code == 202
        await served.kill_9()
    await asyncio.sleep(1.1)  # blink's deadline passes while no gateway runs
    async with restarted_gateway(data_dir, "node-a") as gateway, mqtt(gateway, token) as device:
        await device.subscribe(cex(token, "command/reboot/status"), qos=1)
        _topic, commands = await next_json(device)
        assert commands == [{"id": 1, "payload": "first"}, {"id": 2, "payload": "second"}]
        await device.publish(cex(token, "result/reboot"), b'[{"id": 1, "statusCode": 200}]', qos=1)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.ports['api']}",
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
        ) as api:
            await wait_until(lambda: _is(api, 1, "succeeded"))
            assert await _state(api, 2) == "delivered"
            assert await _state(api, 1, kind="blink") == "expired"  # expired at start, with its event
            assert [e["payload"]["commandType"] for e in await outbox_events(gateway, "acme", "command/expired")] == [
                "blink"
            ]


async def test_a_data_flood_does_not_hold_up_another_devices_command(gateway: Gateway, api: httpx.AsyncClient) -> None:
    flooder_token = await make_device(api, "acme", "flooder")
    token = await make_device(api)
    account = await service_account(api)
    stop = asyncio.Event()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        async with mqtt(gateway, flooder_token, client_id="flooder") as flooder:
            while not stop.is_set():
                await flooder.publish(f"kp1/v1/dcx/{flooder_token}/json", b'{"x": 1}', qos=0)
                sent += 1
                if sent % 50 == 0:
                    await asyncio.sleep(0)

    async with (
        mqtt(gateway, account["username"], account["password"], client_id="app") as app,
        mqtt(gateway, token) as device,
    ):
        await app.subscribe("$gateway/data/acme/+/dcx", qos=0)
        await device.subscribe(cex(token, "command/ping/status"), qos=1)
        flooding = asyncio.create_task(flood())
        await wait_until(lambda: _sent(sent, 500))
        call = asyncio.create_task(
            api.post("/v1/tenants/acme/devices/dev-1/commands/ping", json={"payload": 1, "timeoutMs": 10_000})
        )
        await next_json(device, 10)
        await device.publish(cex(token, "result/ping"), b'[{"id": 1, "statusCode": 200}]', qos=1)
        r = await call
        assert not flooding.done()  # the round trip completed while the flood was still going
        stop.set()
        await flooding
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["dataRefused"].get("429", 0) > 0  # the flooder met its rate limit; dev-1 did not


async def _sent(sent: int, at_least: int) -> bool:
    return sent >= at_least


# -- found by attacking the feature (each failed before its fix) ------------------------------------------


async def test_subscribing_again_and_again_does_not_multiply_pushes(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """A SUBSCRIBE used to start its own unbounded re-push of every outstanding command, whatever the
    filter: 100 SUBSCRIBEs of a device with 6 MB outstanding stalled every other tenant for seconds."""
    token = await make_device(api)
    for _ in range(3):
        await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={"payload": "x"}), 202)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("d", token))
        assert await raw.read_packet() == b"\x20\x02\x00\x00"
        status_filter, result_filter = cex(token, "command/reboot/status"), cex(token, "result/#")
        # one write: the same filter 50 times, then a filter that cannot carry commands 50 times
        await raw.send(b"".join(subscribe_packet(i, status_filter) for i in range(1, 51)))
        await raw.send(b"".join(subscribe_packet(i, result_filter) for i in range(51, 101)))
        pushes = subacks = 0
        while True:
            try:
                packet = await raw.read_packet(timeout=1.0)
            except TimeoutError:
                break  # a second of silence: everything that was coming came
            assert packet is not None
            subacks += packet[0] == 0x90
            pushes += packet[0] & 0xF0 == 0x30
        assert (subacks, pushes) == (100, 1)  # the first subscription to the status topic, once
    finally:
        await raw.close()


async def test_a_persistent_session_gets_what_was_invoked_while_it_was_away(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """A resumed session keeps its subscriptions, so it does not subscribe again: it used to get
    nothing, and its commands expired."""
    token = await make_device(api)
    async with mqtt(gateway, token, client_id="kettle", clean_session=False) as device:
        await device.subscribe(cex(token, "command/+/status"), qos=1)
    await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={"payload": 7}), 202)
    async with mqtt(gateway, token, client_id="kettle", clean_session=False) as device:
        topic, commands = await next_json(device)
    assert (topic, commands) == (cex(token, "command/reboot/status"), [{"id": 1, "payload": 7}])
    assert await _state(api, 1) == "delivered"


async def test_command_ids_cannot_be_used_up_or_reused(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    account = await service_account(api)
    async with mqtt(gateway, account["username"], account["password"], client_id="app") as app:
        await app.subscribe(RESULTS, qos=1)
        # an id may jump at most 1,000,000 above the last: a type is not used up by one invocation
        await app.publish("$gateway/commands/acme/dev-1/idx", b'{"id": 2147483647, "payload": 1}', qos=1)
        _, refused = await next_json(app)
        assert refused["state"] == "refused" and refused["statusCode"] == 409
        await app.publish("$gateway/commands/acme/dev-1/idx", b'{"id": 1000000, "payload": 1}', qos=1)
    assert await _state(api, 1_000_000, kind="idx") == "pending"
    nxt = await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/idx?wait=false", json={}), 202)
    assert nxt["id"] == 1_000_001
    # a device deleted and registered again does not start its ids over (an old id means an old command)
    call = asyncio.create_task(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot", json={"timeoutMs": 60_000}))
    await wait_until(lambda: _exists(api, 1))
    await ok(api.delete("/v1/tenants/acme/devices/dev-1"), 204)
    r = await asyncio.wait_for(call, 5)  # the waiting caller hears at once, not at its timeout
    assert r.status_code == 404 and r.json()["id"] == 1 and "deleted" in r.json()["message"]
    await ok(api.post("/v1/tenants/acme/devices?reuseDeletedId=true", json={"id": "dev-1"}), 201)
    again = await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={}), 202)
    assert again["id"] == 2
    assert token  # the old token went with the device


async def _exists(api: httpx.AsyncClient, command_id: int) -> bool:
    r = await api.get(f"/v1/tenants/acme/devices/dev-1/commands/reboot/{command_id}")
    return r.status_code == 200


async def test_rest_input_that_cannot_be_stored_is_refused_not_a_500(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    base = "/v1/tenants/acme/devices/dev-1/commands"
    for raw, status in [
        (b'{"payload": "\\ud800"}', 422),
        (b'{"payload": {"a": 1, "a": 2}}', 400),
        (b'{"payload": ' + b"[" * 40 + b"]" * 40 + b"}", 400),
        (b'{"payload": NaN}', 422),
        (b"", 400),
    ]:
        r = await api.post(f"{base}/reboot?wait=false", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (raw[:40], r.text)
    assert (await api.get(f"{base}/reboot/99999999999999999999")).status_code == 422
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["commandsInvoked"] == 0


async def test_a_different_result_is_not_taken_for_the_same_one(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """1, 1.0 and true are equal in Python, not in JSON."""
    token = await make_device(api)
    await ok(api.post("/v1/tenants/acme/devices/dev-1/commands/reboot?wait=false", json={}), 202)
    async with mqtt(gateway, token) as device:
        await device.subscribe(cex(token, "result/reboot/#"), qos=1)
        replies = []
        for rid, payload in enumerate([b"1", b"1", b"1.0", b"true"], start=1):
            body = b'[{"id": 1, "statusCode": 200, "payload": ' + payload + b"}]"
            await device.publish(cex(token, f"result/reboot/{rid}"), body, qos=1)
            topic, reply = await next_json(device)
            replies.append(topic.rsplit("/", 1)[1] if reply is None else reply["statusCode"])
    assert replies == ["status", "status", 409, 409]


async def test_a_waiting_call_is_answered_when_the_gateway_stops(tmp_path: Path) -> None:
    """It used to hold the shutdown for ~10 s and end in a 500 with a traceback."""
    from .conftest import test_settings

    gateway = Gateway(test_settings(tmp_path / "data"))
    await gateway.start()
    stopped = False
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.ports['api']}",
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
            timeout=30,
        ) as api:
            await make_device(api)
            call = asyncio.create_task(
                api.post("/v1/tenants/acme/devices/dev-1/commands/reboot", json={"timeoutMs": 120_000})
            )
            await wait_until(lambda: _exists(api, 1))
            loop = asyncio.get_running_loop()
            began = loop.time()
            await gateway.stop()
            stopped = True
            r = await call
            assert loop.time() - began < 5
        assert r.status_code == 503 and r.json()["id"] == 1 and r.json()["state"] == "pending"
    finally:
        if not stopped:
            await gateway.stop()
