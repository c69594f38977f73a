"""Issue 17 point 8: whether a string is another tenant's token must not be learnable.

Certificate-bound tokens (the device id auto-provisioning or an import gives a device) are unique per
tenant only, so a CN equal to another tenant's token is provisioned like any other CN. Two tenants may
then hold devices whose kp1 topics are the same strings: routing, retained messages and every reply are
scoped to the tenant, so neither device ever sees the other's messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway
from registry.identifiers import generate_token

from .conftest import make_device, mqtt, next_json, ok
from .pki_helpers import Issued, device_tls, make_ca, make_device_cert
from .test_device_imports import _import
from .test_events import service_account
from .test_x509 import ACCEPTED, REFUSED, add_ca, metrics, tls_connack

RETRY_LATER = b"\x20\x02\x00\x03"

Seen = list[tuple[str, bytes, bool]]


def kp1(extension: str, token: str, rest: str) -> str:
    return f"kp1/v1/{extension}/{token}/{rest}"


def device_filters(token: str) -> list[str]:
    return [kp1(ext, token, "#") for ext in ("app", "epmx", "cex", "cmx", "dcx")]


@asynccontextmanager
async def listening(client: aiomqtt.Client, filters: list[str]) -> AsyncIterator[Seen]:
    """Subscribes to `filters` and collects (topic, payload, retain) of everything that arrives."""
    for topic_filter in filters:
        await client.subscribe(topic_filter, qos=1)
    seen: Seen = []

    async def collect() -> None:
        async for message in client.messages:
            seen.append((str(message.topic), bytes(message.payload), bool(message.retain)))  # type: ignore[arg-type]

    task = asyncio.create_task(collect())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def cert_client(gateway: Gateway, device: Issued, client_id: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, device), identifier=client_id, timeout=5
    )


async def provisioning_ca(api: httpx.AsyncClient, tmp_path: Path, tenant: str) -> Issued:
    ca = make_ca(tmp_path / tenant, f"{tenant} devices CA")
    await add_ca(api, tenant, ca, autoProvisioningEnabled=True, appVersion="v1")
    return ca


async def settle(seen: list[Seen], quiet: float = 0.5) -> None:
    """Until nothing more arrived for `quiet` seconds."""
    counts = [-1]
    while counts[-1] != sum(len(s) for s in seen):
        counts.append(sum(len(s) for s in seen))
        await asyncio.sleep(quiet)


# -- what the attacker learns ------------------------------------------------------------------------------


async def test_a_cn_equal_to_another_tenants_token_is_provisioned_like_any_other(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """It was refused (`token_taken`) while any other CN was provisioned: an oracle for live tokens."""
    victim = await make_device(api, "victim", "v-1")  # generated: also a valid device id
    ca = await provisioning_ca(api, tmp_path, "attacker")
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, victim)) == ACCEPTED
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "kettle-1")) == ACCEPTED
    devices = (await ok(api.get("/v1/tenants/attacker/devices")))["devices"]
    assert sorted(d["id"] for d in devices) == sorted([victim, "kettle-1"])
    assert (await metrics(api))["connectsRefused"] == {}
    # the victim's token is still its own, and only a bearer credential of the victim
    tokens = await ok(api.get(f"/v1/tenants/victim/tokens/{victim}"))
    assert (tokens["device"], tokens["certificateBound"]) == ("v-1", False)
    async with mqtt(gateway, victim, client_id="victim") as device:
        await device.publish(kp1("epmx", victim, "update/keys/1"), b'{"who": "victim"}', qos=1)
    assert await gateway.registry.metadata.get("victim", "v-1") == {"who": "victim"}
    assert await gateway.registry.metadata.get("attacker", victim) == {}


async def test_the_victim_and_the_device_named_like_its_token_never_meet(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    victim_token = await make_device(api, "victim", "v-1")
    ca = await provisioning_ca(api, tmp_path, "attacker")
    attacker_cert = make_device_cert(tmp_path, ca, victim_token)
    async with AsyncExitStack() as stack:
        victim = await stack.enter_async_context(mqtt(gateway, victim_token, client_id="victim"))
        attacker = await stack.enter_async_context(cert_client(gateway, attacker_cert, "attacker"))
        victim_seen = await stack.enter_async_context(listening(victim, device_filters(victim_token)))
        attacker_seen = await stack.enter_async_context(listening(attacker, device_filters(victim_token)))
        await victim.publish(kp1("app", victim_token, "state"), b"victim-state", qos=1, retain=True)
        await victim.publish(kp1("epmx", victim_token, "update/keys/1"), b'{"secret": "v"}', qos=1)
        await victim.publish(kp1("epmx", victim_token, "get/2"), b"", qos=1)
        await attacker.publish(kp1("app", victim_token, "probe"), b"attacker", qos=1)
        await settle([victim_seen, attacker_seen])
        # a new subscription of the attacker is not replayed the victim's retained message
        late = await stack.enter_async_context(cert_client(gateway, attacker_cert, "attacker-late"))
        late_seen = await stack.enter_async_context(listening(late, [kp1("app", victim_token, "#")]))
        await settle([late_seen])
    own_config = kp1("cmx", victim_token, "config/json/status")  # each its own group's policy, on subscribing
    assert sorted(t for t, _p, _r in victim_seen) == sorted(
        [
            own_config,
            kp1("app", victim_token, "state"),
            kp1("epmx", victim_token, "update/keys/1/status"),
            kp1("epmx", victim_token, "get/2/status"),
        ]
    )
    assert sorted((t, p) for t, p, _r in attacker_seen if t != own_config) == [
        (kp1("app", victim_token, "probe"), b"attacker")
    ]
    assert [json.loads(p)["config"] for t, p, _r in attacker_seen if t == own_config] == [{}]
    assert late_seen == []


async def test_two_tenants_with_the_same_bound_token_each_see_only_their_own(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Replies, retained messages, data, commands and 7/CMP pushes reach only the right tenant's device."""
    token = "kettle-1"
    certs = {t: make_device_cert(tmp_path / t, await provisioning_ca(api, tmp_path, t), token) for t in ("a", "b")}
    await ok(api.put("/v1/tenants/b/groups/default/policy", json={"mode": "b-only"}))
    apps = {t: await service_account(api, t) for t in ("a", "b")}
    async with AsyncExitStack() as stack:
        clients = {t: await stack.enter_async_context(cert_client(gateway, certs[t], f"{t}-dev")) for t in certs}
        seen = {t: await stack.enter_async_context(listening(clients[t], device_filters(token))) for t in certs}
        app_clients = {
            t: await stack.enter_async_context(mqtt(gateway, apps[t]["username"], apps[t]["password"], client_id=t))
            for t in apps
        }
        app_seen = {
            t: await stack.enter_async_context(listening(app_clients[t], [f"$gateway/data/{t}/#"])) for t in apps
        }
        a, b = clients["a"], clients["b"]
        await a.publish(kp1("app", token, "state"), b"a-state", qos=1, retain=True)
        await b.publish(kp1("app", token, "x"), b"b-data", qos=1)
        await a.publish(kp1("epmx", token, "update/keys/1"), b'{"owner": "a"}', qos=1)
        await b.publish(kp1("epmx", token, "get/2"), b"", qos=1)
        await a.publish(kp1("dcx", token, "json/3"), b'[{"t": 1}]', qos=1)
        command = await ok(api.post(f"/v1/tenants/a/devices/{token}/commands/reboot?wait=false", json={}), 202)
        await settle(list(seen.values()))
        result = [{"id": command["id"], "statusCode": 200}]
        await a.publish(kp1("cex", token, "result/reboot/4"), json.dumps(result).encode(), qos=1)
        await settle([*seen.values(), *app_seen.values()])
        late = {t: await stack.enter_async_context(cert_client(gateway, certs[t], f"{t}-late")) for t in certs}
        late_seen = {t: await stack.enter_async_context(listening(late[t], [kp1("app", token, "#")])) for t in certs}
        await settle(list(late_seen.values()))
    topics = {t: sorted(topic for topic, _p, _r in seen[t]) for t in seen}
    assert topics["a"] == sorted(
        [
            kp1("cmx", token, "config/json/status"),
            kp1("app", token, "state"),
            kp1("epmx", token, "update/keys/1/status"),
            kp1("dcx", token, "json/3/status"),
            kp1("cex", token, "command/reboot/status"),
            kp1("cex", token, "result/reboot/4/status"),
        ]
    )
    assert topics["b"] == sorted(
        [kp1("app", token, "x"), kp1("epmx", token, "get/2/status"), kp1("cmx", token, "config/json/status")]
    )
    pushed = {t: json.loads(next(p for topic, p, _r in seen[t] if topic.endswith("config/json/status"))) for t in seen}
    assert (pushed["a"]["config"], pushed["b"]["config"]) == ({}, {"mode": "b-only"})
    got = next(p for t, p, _r in seen["b"] if t.endswith("get/2/status"))
    assert json.loads(got) == {}  # tenant b's device has no metadata; a's "owner" is a's
    assert [t for t, _p, _r in app_seen["a"]] == [f"$gateway/data/a/{token}/dcx"] and app_seen["b"] == []
    assert late_seen["a"] == [(kp1("app", token, "state"), b"a-state", True)] and late_seen["b"] == []


async def test_bound_tokens_are_unique_per_tenant_and_bearer_tokens_across_tenants(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    registry = gateway.registry
    named = "Kx7-q2_Vm9~Lp4Rz8Tw3Ny6B"  # a device id, strong enough to be a bearer token too
    for tenant in ("a", "b"):  # the same bound tokens in two tenants
        await ok(api.post("/v1/tenants", json={"id": tenant}), 201)
        await registry.devices.import_devices(tenant, [named, "imp-2"], with_tokens=True)
    # within a tenant every token names one device
    r = await api.post("/v1/tenants/a/devices/imp-2/tokens", json={"token": named})
    assert r.status_code == 409 and "already in use" in r.json()["message"]
    # a bearer token is unique across tenants: CONNECT username = token finds the tenant
    bearer = generate_token()
    await make_device(api, "a", "bearer-dev", token=bearer)
    r = await api.post("/v1/tenants/b/devices/imp-2/tokens", json={"token": bearer})
    assert r.status_code == 409 and "already in use" in r.json()["message"]
    # a bearer token equal to other tenants' bound tokens: the CONNECT finds the bearer's device
    await make_device(api, "c", "c-dev", token=named)
    async with mqtt(gateway, named) as device:
        await device.publish(kp1("epmx", named, "update/keys/1"), b'{"k": 1}', qos=1)
    assert await registry.metadata.get("c", "c-dev") == {"k": 1}
    assert await registry.metadata.get("a", named) == {} and await registry.metadata.get("b", named) == {}


# -- the CONNECT throttle counts a certificate naming what is not its own --------------------------------


@pytest.mark.gateway_settings(auth_failures_per_address=3)
async def test_provisioning_refusals_of_a_taken_name_count_as_failed_guesses(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """`token_taken` (now within the tenant) and `device_id_taken` were not counted: a CA holder could
    try names without limit."""
    own = await make_device(api, "acme", "dev-1")  # a token of the tenant that is a valid device id
    ca = await provisioning_ca(api, tmp_path, "acme")
    for i in range(2):
        assert await tls_connack(gateway, make_device_cert(tmp_path / "t", ca, own, stem=f"t{i}")) == REFUSED
    assert await tls_connack(gateway, make_device_cert(tmp_path / "d", ca, "dev-1")) == REFUSED
    fresh = make_device_cert(tmp_path, ca, "fresh-1")
    assert await tls_connack(gateway, fresh) == RETRY_LATER  # throttled: its name would have been free
    assert (await metrics(api))["connectsRefused"] == {"token_taken": 2, "device_id_taken": 1, "auth_throttled": 1}


# -- operator-chosen bearer tokens have a minimum strength -------------------------------------------------


@pytest.mark.parametrize(
    "weak",
    ["kettle-1", "Kx7-q2_Vm9~Lp4Rz8Tw3N", "a" * 30, "ab" * 20, "kettle-0000000000000000001", "é" * 30],
)
async def test_a_weak_bearer_token_is_422(api: httpx.AsyncClient, weak: str) -> None:
    await make_device(api)
    r = await api.post("/v1/tenants/acme/devices/dev-1/tokens", json={"token": weak})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == "token" and "at least 22 characters" in body["message"], body
    assert len(await ok(api.get("/v1/tenants/acme/devices/dev-1/tokens"))) == 1  # make_device's own only


async def test_a_strong_chosen_token_and_generated_ones_pass(api: httpx.AsyncClient) -> None:
    await make_device(api)
    for chosen in ("Kx7-q2_Vm9~Lp4Rz8Tw3Ny6B", "Köln-Zürich-ß!$%&'()*,;=?"):  # the whole token alphabet counts
        issued = await ok(api.post("/v1/tenants/acme/devices/dev-1/tokens", json={"token": chosen}), 201)
        assert issued["token"] == chosen
    from registry.identifiers import is_strong_token  # new with this rule

    assert all(is_strong_token(generate_token()) for _ in range(5000))


async def test_a_weak_token_in_a_csv_import_is_a_row_error(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    strong = "Kx7-q2_Vm9~Lp4Rz8Tw3Ny6B"
    csv = f"deviceId,credential\nweak-1,token:kettle-1\nstrong-1,token:{strong}\n"
    job = await _import(api, csv)
    assert (job["state"], job["created"], job["failed"]) == ("succeeded", 1, 1)
    assert "at least 22 characters" in job["errors"][0]["message"] and job["errors"][0]["row"] == 2
    async with mqtt(gateway, strong) as device:
        await device.subscribe(kp1("epmx", strong, "get/+/status"), qos=1)
        await device.publish(kp1("epmx", strong, "get/1"), b"", qos=1)
        assert await next_json(device) == (kp1("epmx", strong, "get/1/status"), {})
