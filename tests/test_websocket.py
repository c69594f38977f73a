"""Issue 11 point 8: MQTT over WebSocket (`ws`, `wss`), with real WebSocket MQTT clients (aiomqtt over
paho's WebSocket transport, and the `websockets` client for exact frames)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.node.runtime import Gateway

from .conftest import (
    admin_http,
    client_tls_context,
    connection,
    make_device,
    next_json,
    next_message,
    ok,
    served_ports,
    wait_until,
)
from .pki_helpers import device_tls, make_ca, make_device_cert
from .test_x509 import add_ca
from .wire import RawClient, connect_packet, packet, publish_packet, subscribe_packet

pytestmark = pytest.mark.gateway_settings(ws_port=0, wss_port=0)

ACCEPTED = b"\x20\x02\x00\x00"
REFUSED = b"\x20\x02\x00\x05"
NOT_AUTHORIZED = 135  # CONNACK 5, as paho reports it


def ws_mqtt(
    gateway: Gateway,
    username: str | None,
    password: str | None = None,
    *,
    tls_context: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> aiomqtt.Client:
    """aiomqtt (paho) over WebSocket: `ws`, or `wss` when given a TLS context."""
    return aiomqtt.Client(
        "localhost" if tls_context else "127.0.0.1",
        gateway.ports["wss" if tls_context else "ws"],
        username=username,
        password=password,
        transport="websockets",
        websocket_path="/mqtt",
        tls_context=tls_context,
        timeout=5,
        **kwargs,
    )


def ws_url(gateway: Gateway, path: str = "/mqtt") -> str:
    return f"ws://127.0.0.1:{gateway.ports['ws']}{path}"


async def refused_code(client: aiomqtt.Client) -> int:
    try:
        async with client:
            pass
    except aiomqtt.MqttCodeError as exc:
        return int(exc.rc) if isinstance(exc.rc, int) else int(exc.rc.value)  # type: ignore[union-attr]
    raise AssertionError("CONNECT was accepted")


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server sent once it ends the connection (None: no close frame)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


@pytest.fixture
async def ws(gateway: Gateway) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as client:  # type: ignore[list-item]
        yield client


def refusals(gateway: Gateway) -> dict[str, int]:
    return dict(gateway.services.metrics.connects_refused)


# -- off by default, and where it is -------------------------------------------------------------------


@pytest.mark.gateway_settings()
async def test_off_by_default(gateway: Gateway) -> None:
    assert "ws" not in gateway.ports and "wss" not in gateway.ports
    written = json.loads(gateway.settings.ports_path.read_text())
    assert set(written) == {"host", "mqtt", "mqtts", "api"}


PORTS_ANY = ["--mqtt-port", "0", "--mqtts-port", "0", "--api-port", "0"]


async def test_serve_flags_turn_it_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--data-dir",
            str(data_dir),
            *PORTS_ANY,
            "--ws-port",
            "0",
            "--wss-port",
            "0",
        ],
        env={**os.environ, "GATEWAY_NODE_ID": "ws-cli"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ports = await served_ports(data_dir, proc)
        assert {"ws", "wss"} <= set(ports)
        async with admin_http(data_dir, ports) as api:
            token = await make_device(api)
        async with aiomqtt.Client("127.0.0.1", ports["ws"], username=token, transport="websockets", timeout=5):
            pass
    finally:
        proc.terminate()
        _, stderr = await asyncio.to_thread(proc.communicate, None, 10)
    ready = next(line for line in stderr.decode().splitlines() if "ready:" in line)
    assert f"ws://127.0.0.1:{ports['ws']}/mqtt" in ready and f"wss://127.0.0.1:{ports['wss']}/mqtt" in ready


async def test_enabled_ports_are_in_ports_json(gateway: Gateway) -> None:
    written = json.loads(gateway.settings.ports_path.read_text())
    assert written["ws"] == gateway.ports["ws"] and written["wss"] == gateway.ports["wss"]
    assert len({written[name] for name in ("mqtt", "mqtts", "ws", "wss", "api")}) == 5


# -- the same session layer ------------------------------------------------------------------------------


async def test_token_device_publishes_and_subscribes(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with ws_mqtt(gateway, token, identifier="over-ws") as client:
        await client.subscribe(f"kp1/v1/app/{token}/#", qos=1)
        await client.publish(f"kp1/v1/app/{token}/hello", b"x" * 200_000, qos=1)  # many WebSocket frames' worth
        message = await next_message(client)
        assert message is not None and message.payload == b"x" * 200_000
        status = await connection(api, "acme", "dev-1")
        assert status["connected"] is True and status["remoteAddress"] == "127.0.0.1"
        assert status["log"][0]["clientId"] == "over-ws" and status["log"][0]["remoteAddress"] == "127.0.0.1"
    await wait_until(lambda: _log_reason(api, "client_disconnect"))


async def _log_reason(api: httpx.AsyncClient, reason: str, detail: str | None = None) -> bool:
    last = (await connection(api, "acme", "dev-1"))["log"][0]
    return bool(
        last["event"] == "disconnected" and last["reason"] == reason and (detail or "") in (last["detail"] or "")
    )


async def test_epmp_request_and_response(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with ws_mqtt(gateway, token) as client:
        await client.subscribe(f"kp1/v1/epmx/{token}/#", qos=1)
        await client.publish(f"kp1/v1/epmx/{token}/update/1", json.dumps({"colour": "red"}).encode(), qos=1)
        assert await next_json(client) == (f"kp1/v1/epmx/{token}/update/1/status", None)
        await client.publish(f"kp1/v1/epmx/{token}/get/2", b"", qos=1)
        assert await next_json(client) == (f"kp1/v1/epmx/{token}/get/2/status", {"colour": "red"})
        await client.publish(f"kp1/v1/epmx/{token}/nope/3", b"")
        topic, body = await next_json(client)
        assert (topic, body["statusCode"]) == (f"kp1/v1/epmx/{token}/nope/3/error", 404)


async def test_bad_credentials_get_connack_5(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api)
    assert await refused_code(ws_mqtt(gateway, "not-a-token")) == NOT_AUTHORIZED
    assert await refused_code(ws_mqtt(gateway, None)) == NOT_AUTHORIZED
    assert await refused_code(ws_mqtt(gateway, "someone@acme", "wrong")) == NOT_AUTHORIZED
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send(connect_packet("c1", "not-a-token"))
        assert await ws.recv() == REFUSED  # the exact bytes, then the close
        await closed_with(ws)
    assert sum(refusals(gateway).values()) == 4


async def test_topic_access_is_the_same_as_over_tcp(
    gateway: Gateway, api: httpx.AsyncClient, ws: ClientConnection
) -> None:
    token = await make_device(api, "acme", "dev-1")
    other = await make_device(api, "globex", "dev-2")
    await ws.send(connect_packet("c1", token))
    assert await ws.recv() == ACCEPTED
    await ws.send(subscribe_packet(7, f"kp1/v1/app/{other}/#"))
    assert await ws.recv() == b"\x90\x03\x00\x07\x80"
    await ws.send(subscribe_packet(8, "#"))
    assert await ws.recv() == b"\x90\x03\x00\x08\x80"
    async with ws_mqtt(gateway, other) as victim:
        await victim.subscribe(f"kp1/v1/app/{other}/#")
        await ws.send(publish_packet(f"kp1/v1/app/{other}/cmd", b"spoof", packet_id=9))
        assert await ws.recv() == b"\x40\x02\x00\x09"  # acknowledged, and dropped
        assert await next_message(victim, timeout=0.5) is None
    metrics = await ok(api.get("/v1/metrics"))
    assert (metrics["subscriptionsDenied"], metrics["publishesDenied"]) == (2, 1)


async def test_revoking_the_token_closes_the_websocket_session(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send(connect_packet("c1", token))
        assert await ws.recv() == ACCEPTED
        await ok(api.patch(f"/v1/tenants/acme/tokens/{token}", json={"state": "revoked"}))
        assert await closed_with(ws) == 1000
    await wait_until(lambda: _log_reason(api, "kicked_by_operator"))


# -- wss: mqtts' certificate, trust and client certificates ------------------------------------------------


async def test_wss_with_a_token(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with ws_mqtt(gateway, token, tls_context=client_tls_context(gateway)) as client:
        await client.subscribe(f"kp1/v1/app/{token}/#")
        await client.publish(f"kp1/v1/app/{token}/x", b"over wss")
        message = await next_message(client)
        assert message is not None and message.payload == b"over wss"


async def test_wss_client_certificate_auto_provisions(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Acme Devices CA")
    await add_ca(api, "acme", ca, autoProvisioningEnabled=True, appVersion="kettle_v1")
    device = make_device_cert(tmp_path, ca, "kettle-7")
    async with ws_mqtt(gateway, None, tls_context=device_tls(gateway, device)) as client:
        await client.subscribe("kp1/kettle_v1/app/kettle-7/#")
        await client.publish("kp1/kettle_v1/app/kettle-7/hello", b"hi")
        message = await next_message(client)
        assert message is not None and message.payload == b"hi"
    dev = await ok(api.get("/v1/tenants/acme/devices/kettle-7"))
    assert dev["autoProvisioned"] is True and dev["attributes"]["subjectDn"] == "CN=kettle-7"


async def test_wss_refuses_an_untrusted_client_certificate(gateway: Gateway, tmp_path: Path) -> None:
    """As on mqtts: the TLS handshake refuses it, logged and counted, before any HTTP is read."""
    stranger = make_device_cert(tmp_path, make_ca(tmp_path / "other", "Nobody's CA"), "intruder")
    with pytest.raises(aiomqtt.MqttError):
        async with ws_mqtt(gateway, None, tls_context=device_tls(gateway, stranger)):
            pass
    await wait_until(lambda: _refused(gateway, "tls_unknown_ca"))


# -- the byte stream: packets split over messages, several in one, fragments ---------------------------


async def test_packets_split_over_messages_and_packed_into_one(
    gateway: Gateway, api: httpx.AsyncClient, ws: ClientConnection
) -> None:
    token = await make_device(api)
    hello = connect_packet("split", token)
    for part in (hello[:1], hello[1:3], hello[3:]):  # the CONNECT in three messages
        await ws.send(part)
    assert await ws.recv() == ACCEPTED
    topic = f"kp1/v1/app/{token}/t"
    # SUBSCRIBE and two PUBLISHes in one message, then a PUBLISH in two fragments of one message
    await ws.send(
        subscribe_packet(1, f"kp1/v1/app/{token}/#") + publish_packet(topic, b"a") + publish_packet(topic, b"b")
    )
    third = publish_packet(topic, b"c" * 1000)
    await ws.send([third[:10], third[10:]])
    received = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
    assert received[0] == b"\x90\x03\x00\x01\x00"
    assert [p[-1:] for p in received[1:3]] == [b"a", b"b"] and received[3].endswith(b"c" * 1000)


async def test_pings_are_answered_and_do_not_disturb_mqtt(
    gateway: Gateway, api: httpx.AsyncClient, ws: ClientConnection
) -> None:
    token = await make_device(api)
    await ws.send(connect_packet("pinger", token))
    assert await ws.recv() == ACCEPTED
    pong = await ws.ping(b"are you there")
    await asyncio.wait_for(pong, 5)
    await ws.send(packet(0xC0, b""))  # PINGREQ
    assert await ws.recv() == b"\xd0\x00"


# -- refused cleanly ------------------------------------------------------------------------------------------


async def test_text_frames_end_the_connection(gateway: Gateway, api: httpx.AsyncClient, ws: ClientConnection) -> None:
    token = await make_device(api)
    await ws.send(connect_packet("c1", token))
    assert await ws.recv() == ACCEPTED
    await ws.send("\x30\x05\x00\x01ahi")  # a PUBLISH, as text [MQTT-6.0.0-1]
    assert await closed_with(ws) == 1003
    await wait_until(lambda: _log_reason(api, "protocol_error", "text frame"))


async def test_a_text_frame_instead_of_connect_is_refused(gateway: Gateway) -> None:
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send("CONNECT")
        assert await closed_with(ws) == 1003
    await wait_until(lambda: _refused(gateway, "websocket_text_frame"))


async def _refused(gateway: Gateway, reason: str, count: int = 1) -> bool:
    return refusals(gateway).get(reason, 0) == count


@pytest.mark.gateway_settings(ws_port=0, max_packet_bytes=1024)
async def test_oversized_messages_and_packets_end_the_connection(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with connect(ws_url(gateway), subprotocols=["mqtt"], max_size=None) as ws:  # type: ignore[list-item]
        await ws.send(b"\x10" + b"\x00" * 70_000)  # over the message limit (64 KiB + 5): refused from its header
        assert await closed_with(ws) == 1009
    await wait_until(lambda: _refused(gateway, "websocket_message_too_big"))
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send(connect_packet("c1", token))
        assert await ws.recv() == ACCEPTED
        await ws.send(publish_packet(f"kp1/v1/app/{token}/big", b"x" * 2000))  # over max_packet_bytes
        await closed_with(ws)
    await wait_until(lambda: _log_reason(api, "protocol_error", "over the limit"))


@pytest.mark.parametrize(
    ("path", "subprotocols", "status"),
    [
        ("/mqtt", ["mqttv5"], 400),
        ("/mqtt", None, 400),
        ("/", ["mqtt"], 404),
        ("/other?x=/mqtt", ["mqtt"], 404),
    ],
)
async def test_wrong_path_or_subprotocol_is_an_http_error(
    gateway: Gateway, path: str, subprotocols: list[str] | None, status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(gateway, path), subprotocols=subprotocols):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == status
    await wait_until(lambda: _refused(gateway, "websocket_bad_request"))


async def test_the_query_string_is_ignored(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    async with connect(ws_url(gateway, "/mqtt?client=browser"), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        await ws.send(connect_packet("c1", token))
        assert await ws.recv() == ACCEPTED


async def test_plain_http_requests_get_an_http_answer(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['ws']}") as http:
        assert (await http.get("/mqtt")).status_code == 426  # Upgrade Required
        assert (await http.get("/")).status_code == 404
        assert (await http.post("/mqtt", content=b"x" * 100)).status_code in (400, 426)
    await wait_until(lambda: _refused(gateway, "websocket_bad_request", 3))


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (b"hello\r\n\r\n", b"400"),
        (bytes(connect_packet("c1", "t")) + b"\r\n\r\n", b"400"),  # MQTT spoken to the WebSocket port
        (b"GET /mqtt HTTP/1.1\r\n" + (b"X-Filler: " + b"a" * 8000 + b"\r\n") * 3, b"431"),  # over 16 KiB
        (b"GET /mqtt HTTP/1.1\r\n" + b"X: y\r\n" * 4000, b"400"),  # websockets' own cap: 128 headers
        (b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n\r\n", b"400"),  # bytes behind the request: no frame
    ],
    ids=["not-http", "mqtt-bytes", "long-request", "many-headers", "trailing-bytes"],
)
async def test_garbage_before_the_upgrade_is_an_http_error(gateway: Gateway, sent: bytes, status: bytes) -> None:
    raw = await RawClient.open(gateway.ports["ws"])
    try:
        await raw.send(sent)
        answer = await asyncio.wait_for(raw.reader.read(4096), 5)
        assert answer.startswith(b"HTTP/1.1 " + status), answer
        assert b"Connection: close" in answer
        assert await raw.closed_by_peer(5)
    finally:
        await raw.close()
    await wait_until(lambda: _refused(gateway, "websocket_bad_request"))


async def test_frames_that_break_rfc_6455_end_the_connection(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    raw = await _upgraded(gateway)
    try:
        await raw.send(_masked(0x82, connect_packet("c1", token)))
        assert await raw.reader.readexactly(6) == b"\x82\x04" + ACCEPTED
        await raw.send(b"\x82\x05hello")  # a client frame without a mask
        close = await asyncio.wait_for(raw.reader.read(), 5)  # to EOF: the server closed the socket
        assert close[:1] == b"\x88" and close[2:4] == b"\x03\xea"  # a close frame, 1002 protocol error
    finally:
        await raw.close()
    await wait_until(lambda: _log_reason(api, "protocol_error", "WebSocket"))


def _masked(first_byte: int, payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    return bytes([first_byte, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


UPGRADE = (
    b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
)


@pytest.mark.parametrize(("behind", "reply"), [("connect", b"\x82\x04" + ACCEPTED), ("text", b"\x88")])
async def test_frames_sent_with_the_upgrade_request(
    gateway: Gateway, api: httpx.AsyncClient, behind: str, reply: bytes
) -> None:
    """A client that does not wait for 101 before its first frame: that frame counts, good or bad."""
    token = await make_device(api)
    frame = _masked(0x82, connect_packet("eager", token)) if behind == "connect" else _masked(0x81, b"hi")
    raw = await RawClient.open(gateway.ports["ws"])
    try:
        await raw.send(UPGRADE + frame)
        assert (await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
        assert (await asyncio.wait_for(raw.reader.readexactly(len(reply)), 5)) == reply
    finally:
        await raw.close()
    if behind == "text":
        await wait_until(lambda: _refused(gateway, "websocket_text_frame"))


async def _upgraded(gateway: Gateway) -> RawClient:
    raw = await RawClient.open(gateway.ports["ws"])
    await raw.send(UPGRADE)
    response = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 5)
    assert response.startswith(b"HTTP/1.1 101"), response
    assert b"Sec-WebSocket-Protocol: mqtt" in response
    return raw


# -- admission and deadlines ---------------------------------------------------------------------------------


async def test_a_silent_socket_is_closed_at_connect_timeout(gateway: Gateway, api: httpx.AsyncClient) -> None:
    silent = await RawClient.open(gateway.ports["ws"])
    try:
        assert await silent.closed_by_peer(5)  # connect_timeout is 1 s in tests
    finally:
        await silent.close()
    assert refusals(gateway) == {"websocket_handshake_timeout": 1}
    async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
        assert await closed_with(ws) in (1000, None)  # upgraded, then no CONNECT within the same deadline
    await wait_until(lambda: _refused(gateway, "connect_timeout"))
    assert gateway.broker is not None
    await wait_until(lambda: _no_sockets(gateway))


async def _no_sockets(gateway: Gateway) -> bool:
    assert gateway.broker is not None
    return gateway.broker.open_sockets == 0


@pytest.mark.gateway_settings(ws_port=0, max_pending_connects_per_address=2, connect_timeout=5.0)
async def test_pending_sockets_per_address_are_capped(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api)
    silent = [await RawClient.open(gateway.ports["ws"]) for _ in range(2)]
    try:
        assert gateway.broker is not None
        await wait_until(lambda: _sockets(gateway, 2))
        third = await RawClient.open(gateway.ports["ws"])
        assert await third.closed_by_peer(2)
        await third.close()
        assert refusals(gateway) == {"max_pending_connects_per_address": 1}
    finally:
        for raw in silent:
            await raw.close()
    await wait_until(lambda: _sockets(gateway, 0))
    async with ws_mqtt(gateway, token):  # the slots came back
        pass


async def _sockets(gateway: Gateway, n: int) -> bool:
    assert gateway.broker is not None
    return gateway.broker.open_sockets == n


@pytest.mark.gateway_settings(ws_port=0, max_connections=2, connect_timeout=5.0)
async def test_websocket_sockets_count_against_max_connections(gateway: Gateway, api: httpx.AsyncClient) -> None:
    silent = [await RawClient.open(gateway.ports["ws"]), await RawClient.open(gateway.ports["mqtt"])]
    try:
        await wait_until(lambda: _sockets(gateway, 2))
        extra = await RawClient.open(gateway.ports["ws"])
        assert await extra.closed_by_peer(2)
        await extra.close()
        assert refusals(gateway) == {"max_connections": 1}
    finally:
        for raw in silent:
            await raw.close()


async def test_keep_alive_is_enforced(gateway: Gateway, api: httpx.AsyncClient, ws: ClientConnection) -> None:
    token = await make_device(api)
    await ws.send(connect_packet("sleepy", token, keepalive=1))
    assert await ws.recv() == ACCEPTED
    await closed_with(ws)  # nothing sent for 1.5 x 1 s
    await wait_until(lambda: _log_reason(api, "keepalive_timeout"))


async def test_will_is_published_when_the_websocket_closes_without_disconnect(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    token = await make_device(api)
    will_topic = f"kp1/v1/app/{token}/will"
    async with ws_mqtt(gateway, token, identifier="watcher") as watcher:
        await watcher.subscribe(will_topic)
        async with connect(ws_url(gateway), subprotocols=["mqtt"]) as ws:  # type: ignore[list-item]
            await ws.send(connect_packet("dying", token, will=(will_topic, b"gone")))
            assert await ws.recv() == ACCEPTED
        # a WebSocket close handshake without DISCONNECT is a lost connection to MQTT [MQTT-3.1.2-8]
        message = await next_message(watcher)
        assert message is not None and message.payload == b"gone"
