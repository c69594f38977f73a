"""Security issue, smaller items: a protocol violation closes the connection ([MQTT-4.8.0-1]), and a
QoS 0 publish is delivered at QoS 0."""

from __future__ import annotations

import logging
import struct

import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import connection, make_device, ok
from .wire import RawClient, ack_packet, connect_packet, packet, publish_fields, publish_packet, subscribe_packet

ACCEPTED = b"\x20\x02\x00\x00"
TOPIC = "kp1/v1/app/{token}/t"


def _s(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


VIOLATIONS = {
    "PUBLISH with QoS 3": lambda t: packet(0x36, _s(t) + b"\x00\x01x"),
    "PUBLISH with a wildcard": lambda t: publish_packet(t.replace(b"/t", b"/+"), b"x"),
    "PUBLISH with U+0000 in the topic": lambda t: publish_packet(t + b"\x00", b"x"),
    "PUBLISH topic not UTF-8": lambda t: publish_packet(t + b"\xff\xfe", b"x"),
    "PUBLISH with an empty topic": lambda t: publish_packet(b"", b"x"),
    "QoS 0 PUBLISH with DUP": lambda t: publish_packet(t, b"x", dup=True),
    "PUBLISH with packet id 0": lambda t: publish_packet(t, b"x", packet_id=0),
    "SUBSCRIBE with flags 0": lambda t: packet(0x80, b"\x00\x01" + _s(t) + b"\x00"),
    "SUBSCRIBE without filters": lambda t: packet(0x82, b"\x00\x01"),
    "SUBSCRIBE with requested QoS 3": lambda t: packet(0x82, b"\x00\x01" + _s(t) + b"\x03"),
    "SUBSCRIBE with reserved bits": lambda t: packet(0x82, b"\x00\x01" + _s(t) + b"\x41"),
    "SUBSCRIBE filter not UTF-8": lambda t: packet(0x82, b"\x00\x01" + _s(t + b"\xc3") + b"\x00"),
    "UNSUBSCRIBE with flags 0": lambda t: packet(0xA0, b"\x00\x01" + _s(t)),
    "UNSUBSCRIBE without filters": lambda t: packet(0xA2, b"\x00\x01"),
    "PUBREL with flags 0": lambda t: packet(0x60, b"\x00\x01"),
    "PUBACK with flags": lambda t: packet(0x42, b"\x00\x01"),
    "PINGREQ with flags": lambda t: b"\xc1\x00",
    "DISCONNECT with flags": lambda t: b"\xe2\x00",
    "UNSUBSCRIBE with an empty filter": lambda t: packet(0xA2, b"\x00\x01" + _s(b"")),
    "PUBACK with a 3-byte body": lambda t: packet(0x40, b"\x00\x01\x00"),
    "PINGREQ with a body": lambda t: packet(0xC0, b"\x00"),
    "remaining length over 4 bytes": lambda t: b"\x30\xff\xff\xff\xff\x01",
    "SUBSCRIBE with 1,001 filters": lambda t: packet(0x82, b"\x00\x01" + (_s(t) + b"\x00") * 1001),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
async def test_a_protocol_violation_closes_the_connection(
    gateway: Gateway, api: httpx.AsyncClient, violation: str
) -> None:
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == ACCEPTED
        await raw.send(VIOLATIONS[violation](TOPIC.format(token=token).encode()))
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
    status = await connection(api, "acme", "dev-1")
    assert status["connected"] is False
    assert status["log"][0]["reason"] == "protocol_error", status["log"][0]
    assert status["log"][0]["detail"] != "internal error"  # recognised, not a crash of the reader


async def test_stray_acknowledgements_are_counted_not_logged(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """amqtt logged a WARNING per PUBACK/PUBREC/PUBCOMP of an unknown id: 40 kB in, 1.2 MB of log out."""
    token = await make_device(api)
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(connect_packet("c", token))
        assert await raw.read_packet() == ACCEPTED
        await raw.send(b"".join(ack_packet(kind, i) for i in range(1, 1001) for kind in (4, 5, 7)))
        await raw.send(b"\xc0\x00")  # PINGREQ: answered once everything before it was handled
        assert await raw.read_packet() == b"\xd0\x00"
    finally:
        await raw.close()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) < 10


def _connect(flags: int, payload: bytes) -> bytes:
    return packet(0x10, _s(b"MQTT") + bytes([4, flags]) + b"\x00\x3c" + payload)


CONNECT_VIOLATIONS = {
    "will QoS 3": (lambda t: _connect(0x82 | 0x04 | 0x18, _s(b"c") + _s(t) + _s(b"bye") + _s(t)), "will_qos_3"),
    "wildcard will topic": (
        lambda t: _connect(0x82 | 0x04, _s(b"c") + _s(t.replace(b"/t", b"/#")) + _s(b"bye") + _s(t)),
        "invalid_will_topic",
    ),
    "trailing bytes": (lambda t: _connect(0x82, _s(b"c") + _s(t) + b"extra"), "trailing_bytes_in_connect"),
    "will QoS without a will": (lambda t: _connect(0x82 | 0x08, _s(b"c") + _s(t)), "will_flags_without_will"),
    "will retain without a will": (lambda t: _connect(0x82 | 0x20, _s(b"c") + _s(t)), "will_flags_without_will"),
    "reserved flag": (lambda t: _connect(0x83, _s(b"c") + _s(t)), "reserved_connect_flag"),
    "password without username": (lambda t: _connect(0x42, _s(b"c") + _s(b"pw")), "password_without_username"),
}


@pytest.mark.parametrize("violation", list(CONNECT_VIOLATIONS))
async def test_a_malformed_connect_is_refused(gateway: Gateway, api: httpx.AsyncClient, violation: str) -> None:
    token = await make_device(api)
    build, reason = CONNECT_VIOLATIONS[violation]
    raw = await RawClient.open(gateway.ports["mqtt"])
    try:
        await raw.send(build(TOPIC.format(token=token).encode()))
        assert await raw.closed_by_peer(2.0)
    finally:
        await raw.close()
    metrics = await ok(api.get("/v1/metrics"))
    assert metrics["connectsRefused"] == {reason: 1}
    assert (await connection(api, "acme", "dev-1"))["log"] == []


async def test_qos0_publish_is_delivered_at_qos0(gateway: Gateway, api: httpx.AsyncClient) -> None:
    """[MQTT-3.8.4-6]: delivered at the lower of the publish QoS and the granted QoS."""
    token = await make_device(api)
    topic = TOPIC.format(token=token)
    sub, pub = await RawClient.open(gateway.ports["mqtt"]), await RawClient.open(gateway.ports["mqtt"])
    try:
        await sub.send(connect_packet("sub", token))
        await pub.send(connect_packet("pub", token))
        assert await sub.read_packet() == ACCEPTED and await pub.read_packet() == ACCEPTED
        await sub.send(subscribe_packet(1, topic, qos=2))
        assert await sub.read_packet() == b"\x90\x03\x00\x01\x02"
        await pub.send(publish_packet(topic, b"zero"))
        await pub.send(publish_packet(topic, b"one", packet_id=7))
        assert await pub.read_packet() == ack_packet(4, 7)
        first, second = await sub.read_packet(), await sub.read_packet()
        assert first is not None and publish_fields(first)[0::3] == (0, b"zero")
        assert second is not None and publish_fields(second)[0::3] == (1, b"one")
    finally:
        await sub.close()
        await pub.close()
