"""An endpoint token is a bearer credential: no log line may carry it whole. Lines that need to say
which token was involved carry `secret_hint` (a short SHA-256 prefix), as refused CONNECTs do."""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.ops.audit import secret_hint

from .conftest import make_device, ok, wait_until
from .pki_helpers import Issued, device_tls, make_ca, make_device_cert, trust
from .wire import RawClient, connect_packet, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"
REFUSED = b"\x20\x02\x00\x05"
SUBACK_FAILURE = 0x80


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger at INFO and above (the gateway's default level)."""
    with caplog.at_level(logging.INFO):
        yield caplog


def lines(caplog: pytest.LogCaptureFixture, event: str | None = None) -> list[str]:
    texts = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    return [t for t in texts if event is None or f"event={event} " in t]


def assert_nowhere(caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    for text in lines(caplog):
        for token in tokens:
            assert token not in text, text


async def device_session(gateway: Gateway, token: str) -> RawClient:
    raw = await RawClient.open(gateway.ports["mqtt"])
    await raw.send(connect_packet("c1", token))
    assert await raw.read_packet() == ACCEPTED
    return raw


async def denied(api: httpx.AsyncClient, counter: str, n: int) -> None:
    async def reached() -> bool:
        return bool((await ok(api.get("/v1/metrics")))[counter] >= n)

    await wait_until(reached)


async def test_denied_publishes_log_a_hint_not_the_token(
    gateway: Gateway, api: httpx.AsyncClient, logs: pytest.LogCaptureFixture
) -> None:
    mine = await make_device(api)
    other = await make_device(api, "globex", "dev-2")
    raw = await device_session(gateway, mine)
    try:
        topics = [
            f"kp1/v1/app/{other}/hello",  # another device's token: probing, or a leaked secret
            f"kp1/v1/app/{mine}",  # its own token, but no resource path
            f"{mine}/hello",  # its own token outside any kp1 topic
        ]
        for packet_id, topic in enumerate(topics, 1):
            await raw.send(publish_packet(topic, b"x", packet_id=packet_id))
            assert await raw.read_packet() == bytes([0x40, 2, 0, packet_id])  # PUBACK
        await denied(api, "publishesDenied", len(topics))
    finally:
        await raw.close()
    found = lines(logs, "publish_denied")
    assert len(found) == 3, found
    assert all("tenant=acme device=dev-1 " in line for line in found), found
    assert f"kp1/v1/app/[sha256:{secret_hint(other)}]/hello" in found[0]
    assert f"kp1/v1/app/[sha256:{secret_hint(mine)}]" in found[1]
    assert f"[sha256:{secret_hint(mine)}]/hello" in found[2]
    assert_nowhere(logs, mine, other)


@pytest.mark.parametrize(
    ("topic_filter", "shown"),
    [
        ("kp1/+/app/{mine}/#", "kp1/+/app/[sha256:{mine_hint}]/#"),  # a wildcard above its own token
        ("kp1/v1/app/{other}/#", "kp1/v1/app/[sha256:{other_hint}]/#"),
        ("kp1/v1/+/{other}/+/status", "kp1/v1/+/[sha256:{other_hint}]/+/status"),
        ("kp1/v1/app/+/#", "kp1/v1/app/+/#"),  # a wildcard is no secret: shown as it is
    ],
)
async def test_denied_subscriptions_log_a_hint_not_the_token(
    gateway: Gateway, api: httpx.AsyncClient, logs: pytest.LogCaptureFixture, topic_filter: str, shown: str
) -> None:
    mine = await make_device(api)
    other = await make_device(api, "globex", "dev-2")
    raw = await device_session(gateway, mine)
    try:
        await raw.send(subscribe_packet(7, topic_filter.format(mine=mine, other=other)))
        assert await raw.read_packet() == b"\x90\x03\x00\x07" + bytes([SUBACK_FAILURE])
    finally:
        await raw.close()
    found = lines(logs, "subscribe_denied")
    assert len(found) == 1 and "tenant=acme device=dev-1 " in found[0], found
    assert shown.format(mine_hint=secret_hint(mine), other_hint=secret_hint(other)) in found[0]
    assert_nowhere(logs, mine, other)


@pytest.mark.parametrize("topic", ["kp1/v1/app/{mine}/#", "$kp1/v1/app/{mine}/hello", "$x/{other}"])
async def test_an_invalid_publish_topic_is_logged_without_the_token(
    gateway: Gateway, api: httpx.AsyncClient, logs: pytest.LogCaptureFixture, topic: str
) -> None:
    """A wildcard or a leading '$' in a PUBLISH topic closes the connection as a protocol error."""
    mine = await make_device(api)
    other = await make_device(api, "globex", "dev-2")
    raw = await device_session(gateway, mine)
    try:
        await raw.send(publish_packet(topic.format(mine=mine, other=other), b"x"))
        assert await raw.closed_by_peer(3.0)
    finally:
        await raw.close()

    async def logged() -> bool:
        return bool(lines(logs, "disconnected"))

    await wait_until(logged)
    assert "reason=protocol_error" in lines(logs, "disconnected")[0]
    assert_nowhere(logs, mine, other)


async def tls_connack(gateway: Gateway, device: Issued, username: str | None = None) -> bytes | None:
    reader, writer = await asyncio.open_connection("localhost", gateway.ports["mqtts"], ssl=device_tls(gateway, device))
    raw = RawClient(reader, writer)
    try:
        await raw.send(connect_packet("c", username))
        return await raw.read_packet()
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        await raw.close()


async def test_token_taken_refusal_logs_no_token(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """Auto-provisioning makes the certificate's CN the device id and its token. When that token is
    already another device's (of the same tenant: since issue 17 another tenant's never collides), the
    refusal must not print it."""
    taken = "taken-" + secrets.token_urlsafe(18)  # a live token that is also a valid device id
    await make_device(api, "tenant-a", "a-other", token=taken)
    ca = make_ca(tmp_path, "A CA")
    await ok(trust(api, "tenant-a", ca, autoProvisioningEnabled=True), 201)
    cert = make_device_cert(tmp_path, ca, taken)
    assert await tls_connack(gateway, cert) == REFUSED
    assert await tls_connack(gateway, cert, username=taken) == REFUSED  # username = "its own" token
    assert [d["id"] for d in (await ok(api.get("/v1/tenants/tenant-a/devices")))["devices"]] == ["a-other"]
    assert (await ok(api.get("/v1/metrics")))["connectsRefused"] == {"token_taken": 2}
    found = lines(logs, "connect_refused")
    assert len(found) == 2 and all("reason=token_taken" in line and "tenant=tenant-a" in line for line in found)
    assert f"username_sha256={secret_hint(taken)}" in found[1]
    assert_nowhere(logs, taken)


async def test_certificate_with_another_devices_token_logs_a_hint(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    other = await make_device(api, "tenant-b", "b-device")
    ca = make_ca(tmp_path, "A CA")
    await ok(api.post("/v1/tenants", json={"id": "tenant-a"}), 201)
    await ok(trust(api, "tenant-a", ca, autoProvisioningEnabled=True), 201)
    assert await tls_connack(gateway, make_device_cert(tmp_path, ca, "a-device"), username=other) == REFUSED
    found = lines(logs, "connect_refused")
    assert len(found) == 1 and "reason=credential_mismatch" in found[0]
    assert f"username_sha256={secret_hint(other)}" in found[0]
    assert_nowhere(logs, other)
