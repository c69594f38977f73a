"""Issue 3: trusted CAs per tenant, X.509 authentication, auto-provisioning, tombstones, quotas, dry-run."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.node.runtime import Gateway

from .conftest import connection, make_device, ok, outbox_events, wait_until
from .pki_helpers import NOW, Issued, device_tls, make_ca, make_device_cert, trust
from .wire import RawClient, connect_packet

ACCEPTED = b"\x20\x02\x00\x00"
REGISTERED = "endpoint/lifecycle/registered"
REFUSED = b"\x20\x02\x00\x05"


async def tls_connack(
    gateway: Gateway, device: Issued | None, username: str | None = None, client_id: str = "c", keep_open: bool = False
) -> bytes | str | RawClient:
    """CONNACK bytes, or 'tls_refused' when the TLS layer refused the certificate."""
    try:
        reader, writer = await asyncio.open_connection(
            "localhost", gateway.ports["mqtts"], ssl=device_tls(gateway, device)
        )
    except (ssl.SSLError, ConnectionError):
        return "tls_refused"
    raw = RawClient(reader, writer)
    try:
        await raw.send(connect_packet(client_id, username))
        reply = await raw.read_packet()
    except (ssl.SSLError, ConnectionError):
        reply = None
    if keep_open and reply == ACCEPTED:
        return raw
    await raw.close()
    return reply if reply is not None else "tls_refused"


async def add_ca(api: httpx.AsyncClient, tenant: str, ca: Issued, **options: object) -> dict[str, object]:
    r = await api.post("/v1/tenants", json={"id": tenant})
    assert r.status_code in (201, 409)
    if options.get("group", "default") != "default":  # a CA provisions into a group that exists (issue 10)
        r = await api.post(f"/v1/tenants/{tenant}/groups", json={"id": options["group"]})
        assert r.status_code in (201, 409)
    return await ok(trust(api, tenant, ca, **options), 201)  # type: ignore[no-any-return]


async def metrics(api: httpx.AsyncClient) -> dict[str, object]:
    return await ok(api.get("/v1/metrics"))  # type: ignore[no-any-return]


# -- 1. uploading trusted CAs -------------------------------------------------------------------


async def test_upload_list_read_update_delete(api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    created = await add_ca(
        api, "acme", ca, autoProvisioningEnabled=True, group="kitchen", appVersion="v1", provisioningRatePerMinute=60
    )
    assert created["subjectDn"] == "CN=Acme Devices CA" and created["keyAlgorithm"] == "EC-secp256r1"
    assert len(str(created["spkiSha256"])) == 64 and created["autoProvisioningEnabled"] is True
    assert created["deviceIdTemplate"] == "{{subject-cn}}" and created["authIdTemplate"] == "{{subject-dn}}"
    ca_id = created["id"]
    assert [c["id"] for c in await ok(api.get("/v1/tenants/acme/trusted-cas"))] == [ca_id]
    patched = await ok(api.patch(f"/v1/tenants/acme/trusted-cas/{ca_id}", json={"autoProvisioningEnabled": False}))
    assert patched["autoProvisioningEnabled"] is False and patched["group"] == "kitchen"
    await ok(api.delete(f"/v1/tenants/acme/trusted-cas/{ca_id}"), 204)
    await ok(api.get(f"/v1/tenants/acme/trusted-cas/{ca_id}"), 404)


async def test_same_ca_in_another_tenant_is_409(api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Shared CA")
    await add_ca(api, "acme", ca)
    await ok(api.post("/v1/tenants", json={"id": "globex"}), 201)
    r = await trust(api, "globex", ca)  # the key's holder, proving it
    assert r.status_code == 409 and "another tenant" in r.json()["message"] and "'acme'" in r.json()["message"]
    # same key, new certificate (re-issued with another name): still the same CA
    same_key = make_ca(tmp_path, "Shared CA renamed", key=ca.key)
    r = await trust(api, "globex", same_key)
    assert r.status_code == 409
    r = await trust(api, "acme", ca)
    assert r.status_code == 409
    assert await ok(api.get("/v1/tenants/globex/trusted-cas")) == []


def _bad_cas(tmp_path: Path) -> dict[str, str]:
    good = make_ca(tmp_path, "Root")
    a = make_ca(tmp_path, "Loop A")
    b = make_ca(tmp_path, "Loop B", issuer=a)
    a_by_b = make_ca(tmp_path, "Loop A", key=a.key, issuer=b, stem="a_by_b")
    return {
        "garbage": "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        "not a certificate": "hello world",
        "a private key": good.key_path.read_text(),
        "not a CA": make_device_cert(tmp_path, good, "leaf").pem,
        "no keyCertSign": make_ca(tmp_path, "No Sign", key_cert_sign=False).pem,
        "expired": make_ca(
            tmp_path, "Old", not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
        ).pem,
        "weak RSA": make_ca(tmp_path, "Weak", key=rsa.generate_private_key(65537, 1024)).pem,
        "chain loop": b.pem + a_by_b.pem + b.pem,
        "100 KB": make_device_cert(tmp_path, good, "big", ca_flag=True, extra_bytes=100_000).pem,
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "not a certificate",
        "a private key",
        "not a CA",
        "no keyCertSign",
        "expired",
        "weak RSA",
        "chain loop",
        "100 KB",
    ],
)
async def test_bad_ca_uploads_are_400_with_a_reason(api: httpx.AsyncClient, tmp_path: Path, case: str) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    r = await api.post("/v1/tenants/acme/trusted-cas", json={"cert": _bad_cas(tmp_path)[case]})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "cert" and r.json()["message"]
    assert await ok(api.get("/v1/tenants/acme/trusted-cas")) == []


async def test_bad_template_is_422(api: httpx.AsyncClient, tmp_path: Path) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    r = await api.post(
        "/v1/tenants/acme/trusted-cas", json={"cert": make_ca(tmp_path, "X").pem, "deviceIdTemplate": "{{subject-xyz}}"}
    )
    assert r.status_code == 422 and r.json()["field"] == "deviceIdTemplate"


async def test_unknown_tenant_is_404(api: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await api.post("/v1/tenants/nope/trusted-cas", json={"cert": make_ca(tmp_path, "X").pem})
    assert r.status_code == 404


# -- 3. mTLS, 4. auto-provisioning --------------------------------------------------------------


async def test_first_connect_auto_provisions_in_one_go(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    created = await add_ca(api, "acme", ca, autoProvisioningEnabled=True, group="kitchen", appVersion="kettle_v1")
    device = make_device_cert(tmp_path, ca, "kettle-42")
    assert await tls_connack(gateway, device) == ACCEPTED  # the FIRST connection succeeds
    dev = await ok(api.get("/v1/tenants/acme/devices/kettle-42"))
    assert (dev["state"], dev["autoProvisioned"], dev["group"], dev["appVersion"]) == (
        "registered",  # provisioned once it applies its group's policy (issue 10)
        True,
        "kitchen",
        "kettle_v1",
    )
    assert dev["attributes"]["subjectDn"] == "CN=kettle-42"
    tokens = await ok(api.get("/v1/tenants/acme/devices/kettle-42/tokens"))
    assert [t["token"] for t in tokens] == ["kettle-42"] and tokens[0]["state"] == "active"
    outbox = await outbox_events(gateway, "acme", REGISTERED)
    assert [e["subject"] for e in outbox] == ["endpoint/lifecycle/registered"]
    assert outbox[0]["payload"]["endpointId"] == "kettle-42" and outbox[0]["payload"]["caId"] == created["id"]
    # later connects find the records; nothing new is created
    assert await tls_connack(gateway, device, client_id="again") == ACCEPTED
    assert len((await ok(api.get("/v1/tenants/acme/devices")))["devices"]) == 1
    assert len(await outbox_events(gateway, "acme", REGISTERED)) == 1
    # the device uses its token (its device id) in kp1 topics
    import aiomqtt

    async with aiomqtt.Client("localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, device)) as c:
        await c.subscribe("kp1/kettle_v1/app/kettle-42/#")
        await c.publish("kp1/kettle_v1/app/kettle-42/hello", b"hi")
        async for message in c.messages:
            assert message.payload == b"hi"
            break


async def test_without_auto_provisioning_an_unknown_certificate_is_refused(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "d1")) == REFUSED
    assert (await ok(api.get("/v1/tenants/acme/devices")))["devices"] == []
    assert (await metrics(api))["connectsRefused"] == {"unknown_certificate": 1}


async def test_token_devices_still_connect_over_tls_without_a_certificate(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    await add_ca(api, "acme", make_ca(tmp_path, "Acme CA"), autoProvisioningEnabled=True)
    token = await make_device(api, "acme", "tok-dev")
    assert await tls_connack(gateway, None, username=token) == ACCEPTED


@pytest.mark.gateway_settings(max_sessions_per_device=50)  # 50 client ids of one device at once
async def test_fifty_simultaneous_first_connects_create_one_device(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    device = make_device_cert(tmp_path, ca, "rush")
    replies = await asyncio.gather(*(tls_connack(gateway, device, client_id=f"c{i}") for i in range(50)))
    assert replies == [ACCEPTED] * 50
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["rush"]
    assert len(await outbox_events(gateway, "acme", REGISTERED)) == 1
    creds = await gateway.registry.credentials.list("acme", "rush")
    assert sorted(c.kind.value for c in creds) == ["token", "x509"]


async def test_disconnect_during_provisioning_leaves_nothing_half_made(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    device = make_device_cert(tmp_path, ca, "flaky")
    for _ in range(5):  # CONNECT, then vanish at once
        _reader, writer = await asyncio.open_connection(
            "localhost", gateway.ports["mqtts"], ssl=device_tls(gateway, device)
        )
        writer.write(connect_packet("gone", None))
        writer.transport.abort()
    await wait_until(lambda: _no_sockets(gateway))  # every vanished connection has been dealt with
    devices = (await ok(api.get("/v1/tenants/acme/devices")))["devices"]
    if devices:  # either the whole device with both credentials, or nothing
        creds = await gateway.registry.credentials.list("acme", "flaky")
        assert sorted(c.kind.value for c in creds) == ["token", "x509"]
    assert await tls_connack(gateway, device) == ACCEPTED
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["flaky"]


async def _no_sockets(gateway: Gateway) -> bool:
    assert gateway.broker is not None
    return gateway.broker.open_sockets == 0


# -- attacks ------------------------------------------------------------------------------------


async def test_certificate_attacks_are_refused(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    rogue = make_ca(tmp_path / "rogue", "Acme CA")  # same subject DN, another key
    untrusted = make_ca(tmp_path / "other", "Other CA")
    cases = {
        "untrusted CA": make_device_cert(tmp_path, untrusted, "u1"),
        "same DN, other key": make_device_cert(tmp_path / "rogue", rogue, "r1"),
        "expired leaf": make_device_cert(
            tmp_path, ca, "e1", not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1)
        ),
        "not yet valid leaf": make_device_cert(
            tmp_path, ca, "n1", not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=10)
        ),
        "CA:TRUE leaf": make_device_cert(tmp_path, ca, "c1", ca_flag=True),
        "serverAuth-only leaf": make_device_cert(tmp_path, ca, "s1", eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
        "100 KB leaf": make_device_cert(tmp_path, ca, "big1", extra_bytes=100_000),
    }
    for name, cert in cases.items():
        reply = await tls_connack(gateway, cert)
        assert reply in (REFUSED, "tls_refused"), (name, reply)
    assert (await ok(api.get("/v1/tenants/acme/devices")))["devices"] == []


async def test_invalid_template_results_are_refused(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    for i, cn in enumerate(["a/b", "a+b", "a#b", "kettle.42", "with space"]):
        assert await tls_connack(gateway, make_device_cert(tmp_path, ca, cn, stem=f"bad{i}")) == REFUSED, cn
    org_ca = make_ca(tmp_path / "o", "Org CA")
    await add_ca(api, "acme", org_ca, autoProvisioningEnabled=True, deviceIdTemplate="{{subject-o}}")
    # an empty O gives an empty id: refused, never mangled into something else
    assert await tls_connack(gateway, make_device_cert(tmp_path, org_ca, "no-org")) == REFUSED
    named = make_device_cert(tmp_path, org_ca, "x", organization="acme-plant-7", stem="named")
    assert await tls_connack(gateway, named) == ACCEPTED
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["acme-plant-7"]
    assert (await metrics(api))["connectsRefused"] == {"invalid_template_result": 6}


async def test_certificate_of_tenant_a_with_token_of_tenant_b(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "A CA")
    await add_ca(api, "tenant-a", ca, autoProvisioningEnabled=True)
    b_token = await make_device(api, "tenant-b", "b-device")
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "a-device"), username=b_token) == REFUSED
    assert (await ok(api.get("/v1/tenants/tenant-a/devices")))["devices"] == []  # nothing provisioned on the way
    assert (await metrics(api))["connectsRefused"] == {"credential_mismatch": 1}
    assert (await connection(api, "tenant-b", "b-device"))["connected"] is False


# -- 2. changes without restart ------------------------------------------------------------------


async def test_adding_a_ca_needs_no_restart_and_removing_it_closes_sessions(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Late CA")
    device = make_device_cert(tmp_path, ca, "late-1")
    assert await tls_connack(gateway, device) == "tls_refused"  # not trusted yet
    created = await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    live = await tls_connack(gateway, device, keep_open=True)
    assert isinstance(live, RawClient)
    start = time.monotonic()
    await ok(api.delete(f"/v1/tenants/acme/trusted-cas/{created['id']}"), 204)
    assert await live.closed_by_peer(1.0) and time.monotonic() - start < 1.0
    await live.close()
    assert await tls_connack(gateway, device) == "tls_refused"
    status = await connection(api, "acme", "late-1")
    assert status["log"][0]["reason"] == "kicked_by_operator" and status["log"][0]["detail"] == "trusted CA removed"


async def test_disabling_a_ca_closes_its_sessions_only(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca1, ca2 = make_ca(tmp_path / "1", "CA One"), make_ca(tmp_path / "2", "CA Two")
    one = await add_ca(api, "acme", ca1, autoProvisioningEnabled=True)
    await add_ca(api, "acme", ca2, autoProvisioningEnabled=True)
    s1 = await tls_connack(gateway, make_device_cert(tmp_path, ca1, "one"), keep_open=True)
    s2 = await tls_connack(gateway, make_device_cert(tmp_path, ca2, "two"), keep_open=True)
    assert isinstance(s1, RawClient) and isinstance(s2, RawClient)
    await ok(api.patch(f"/v1/tenants/acme/trusted-cas/{one['id']}", json={"enabled": False}))
    assert await s1.closed_by_peer(1.0)
    assert await s2.silent_for(0.3)
    await s1.close()
    await s2.close()


# -- 5. tombstones, 6. quotas and rate limits ----------------------------------------------------


async def test_deleted_device_is_not_silently_reprovisioned(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    device = make_device_cert(tmp_path, ca, "ghost")
    assert await tls_connack(gateway, device) == ACCEPTED
    await ok(api.delete("/v1/tenants/acme/devices/ghost"), 204)
    assert await tls_connack(gateway, device) == REFUSED
    assert (await metrics(api))["connectsRefused"] == {"deleted": 1}
    stones = await ok(api.get("/v1/tenants/acme/tombstones"))
    assert [s["deviceId"] for s in stones] == ["ghost"]
    await ok(api.delete(f"/v1/tenants/acme/tombstones/{stones[0]['fingerprint']}"), 204)
    assert await tls_connack(gateway, device) == ACCEPTED
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["ghost"]


async def test_tenant_device_quota(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await ok(api.post("/v1/tenants", json={"id": "acme", "maxDevices": 1}), 201)
    await ok(trust(api, "acme", ca, autoProvisioningEnabled=True), 201)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "first")) == ACCEPTED
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "second")) == REFUSED
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["first"]
    assert (await metrics(api))["connectsRefused"] == {"device_quota": 1}


async def test_per_ca_provisioning_rate(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True, provisioningRatePerMinute=2)
    certs = [make_device_cert(tmp_path, ca, f"r{i}") for i in range(3)]
    results = [await tls_connack(gateway, cert) for cert in certs]
    assert results == [ACCEPTED, ACCEPTED, REFUSED]
    assert len((await ok(api.get("/v1/tenants/acme/devices")))["devices"]) == 2
    assert (await metrics(api))["connectsRefused"] == {"provisioning_rate_limited": 1}
    # the limit is on creating identities: known devices connect as often as they like
    assert [await tls_connack(gateway, certs[0], client_id=f"k{i}") for i in range(3)] == [ACCEPTED] * 3


# -- 7. dry-run ---------------------------------------------------------------------------------


async def test_dry_run_answers_and_writes_nothing(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme CA")
    created = await add_ca(api, "acme", ca, autoProvisioningEnabled=True, deviceIdTemplate="dev-{{subject-cn}}")
    device = make_device_cert(tmp_path, ca, "k1")
    check = await ok(api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": device.pem}))
    assert check["decision"] == "provisioned" and check["matchedCa"]["id"] == created["id"]
    assert check["chainValid"] is True and check["deviceId"] == "dev-k1" and check["authId"] == "CN=k1"
    assert (await ok(api.get("/v1/tenants/acme/devices")))["devices"] == []  # nothing written
    assert await tls_connack(gateway, device) == ACCEPTED
    again = await ok(api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": device.pem}))
    assert again["decision"] == "accepted" and again["existingDevice"] is True
    untrusted = make_device_cert(tmp_path, make_ca(tmp_path / "x", "X CA"), "x1")
    refused = await ok(api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": untrusted.pem}))
    assert (refused["decision"], refused["reason"], refused["chainValid"]) == ("refused", "unknown_ca", False)
    expired = make_device_cert(
        tmp_path, ca, "old", not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
    )
    res = await ok(api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": expired.pem}))
    assert res["reason"] == "certificate_invalid" and res["chainValid"] is False
    other = make_ca(tmp_path / "g", "Globex CA")
    await add_ca(api, "globex", other)
    cross = await ok(
        api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": make_device_cert(tmp_path, other, "g1").pem})
    )
    assert cross["reason"] == "ca_tenant_mismatch" and "globex" not in str(cross)
    r = await api.post("/v1/tenants/acme/trusted-cas/check", json={"cert": "garbage"})
    assert r.status_code == 400 and r.json()["field"] == "cert"


async def test_rsa_device_ca_and_ec_p384(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    rsa_ca = make_ca(tmp_path / "rsa", "RSA CA", key=rsa.generate_private_key(65537, 2048))
    await add_ca(api, "acme", rsa_ca, autoProvisioningEnabled=True)
    assert await tls_connack(gateway, make_device_cert(tmp_path, rsa_ca, "rsa-dev")) == ACCEPTED
    p384 = make_ca(tmp_path / "p384", "P384 CA", key=ec.generate_private_key(ec.SECP384R1()))
    await add_ca(api, "acme", p384, autoProvisioningEnabled=True)
    assert await tls_connack(gateway, make_device_cert(tmp_path, p384, "p384-dev")) == ACCEPTED


async def test_intermediate_ca_with_its_chain(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    """The trusted CA is the devices' issuing intermediate, uploaded with its root: no root needed in TLS."""
    root = make_ca(tmp_path / "root", "Acme Root")
    intermediate = make_ca(tmp_path / "int", "Acme Devices Intermediate", issuer=root)
    created = await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    assert created["id"] == "acme"
    ca = await ok(trust(api, "acme", intermediate, intermediate.pem + root.pem, autoProvisioningEnabled=True), 201)
    assert ca["subjectDn"] == "CN=Acme Devices Intermediate" and root.pem.strip() in ca["cert"]
    assert await tls_connack(gateway, make_device_cert(tmp_path, intermediate, "via-int")) == ACCEPTED
    # a device issued by the root directly is not trusted: the anchor is the intermediate
    assert await tls_connack(gateway, make_device_cert(tmp_path / "r", root, "via-root")) in (REFUSED, "tls_refused")
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/acme/devices")))["devices"]] == ["via-int"]


async def test_tls_refusals_are_logged_and_counted(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSL refuses these in the handshake; the gateway runs that handshake, so each is a counted
    refusal with a reason, like any CONNACK 5."""
    import logging

    ca = make_ca(tmp_path, "Acme CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True)
    expired = make_device_cert(
        tmp_path, ca, "old", not_before=NOW - dt.timedelta(days=9), not_after=NOW - dt.timedelta(days=1)
    )
    stranger = make_device_cert(tmp_path / "x", make_ca(tmp_path / "x", "Stranger CA"), "s1")
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        assert await tls_connack(gateway, expired) == "tls_refused"
        assert await tls_connack(gateway, stranger) == "tls_refused"
        silent = await RawClient.open(gateway.ports["mqtts"])  # TCP, then no ClientHello at all
        assert await silent.closed_by_peer(3.0)  # connect_timeout is 1 s in tests
        await silent.close()
    refused = (await metrics(api))["connectsRefused"]
    assert refused == {"tls_certificate_expired": 1, "tls_unknown_ca": 1, "tls_handshake_timeout": 1}
    lines = [r.getMessage() for r in caplog.records if "connect_refused" in r.getMessage()]
    assert any("reason=tls_certificate_expired" in line and "remote=127.0.0.1:" in line for line in lines)
