"""The raw-byte MQTT 3.1.1 checks on packets after CONNECT (pure, no gateway)."""

from __future__ import annotations

import struct

import pytest

from gateway.mqtt.packet_checks import check_packet

PUBLISH, PUBACK, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ = 3, 4, 6, 8, 10, 12


def _s(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


@pytest.mark.parametrize(
    ("packet_type", "flags", "body"),
    [
        (PUBLISH, 0, _s(b"a/b") + b"payload"),
        (PUBLISH, 0x02, _s(b"a/b") + b"\x00\x07payload"),
        (PUBLISH, 0x0D, _s(b"a/b") + b"\x00\x07"),  # DUP, QoS 2, retain
        (PUBACK, 0, b"\x00\x01"),
        (PUBREL, 0x02, b"\x00\x01"),
        (SUBSCRIBE, 0x02, b"\x00\x01" + _s(b"a/+") + b"\x01" + _s(b"#") + b"\x02"),
        (UNSUBSCRIBE, 0x02, b"\x00\x01" + _s(b"a/+")),
        (PINGREQ, 0, b""),
    ],
)
def test_well_formed_packets_pass(packet_type: int, flags: int, body: bytes) -> None:
    assert check_packet(packet_type, flags, body) is None


@pytest.mark.parametrize(
    ("packet_type", "flags", "body", "words"),
    [
        (PUBLISH, 0x06, _s(b"a") + b"\x00\x01", "QoS 3"),
        (PUBLISH, 0x08, _s(b"a"), "DUP"),
        (PUBLISH, 0x02, _s(b"a") + b"\x00\x00", "identifier 0"),
        (PUBLISH, 0, _s(b"a/+"), "wildcard"),
        (PUBLISH, 0, _s(b""), "empty topic"),
        (PUBLISH, 0, _s(b"a\x00"), "U+0000"),
        (PUBLISH, 0, _s(b"\xc3"), "not UTF-8"),
        (PUBLISH, 0, b"\x00\x09abc", "runs past"),
        (PUBACK, 0x01, b"\x00\x01", "flags"),
        (PUBACK, 0, b"\x00\x01\x00", "remaining length"),
        (PUBREL, 0, b"\x00\x01", "flags"),
        (PINGREQ, 0, b"\x00", "remaining length"),
        (SUBSCRIBE, 0, b"\x00\x01" + _s(b"a") + b"\x00", "flags"),
        (SUBSCRIBE, 0x02, b"\x00\x01", "without a topic filter"),
        (SUBSCRIBE, 0x02, b"\x00\x01" + _s(b"a") + b"\x03", "requested QoS"),
        (SUBSCRIBE, 0x02, b"\x00\x01" + _s(b"a"), "runs past"),
        (SUBSCRIBE, 0x02, b"\x00\x01" + _s(b"") + b"\x00", "empty topic filter"),
        (UNSUBSCRIBE, 0x02, b"\x00\x00" + _s(b"a"), "identifier 0"),
        (UNSUBSCRIBE, 0x02, b"\x00\x01" + _s(b"\xff"), "not UTF-8"),
    ],
)
def test_violations_are_named(packet_type: int, flags: int, body: bytes, words: str) -> None:
    problem = check_packet(packet_type, flags, body)
    assert problem is not None and words in problem, problem


def test_filters_per_packet_are_capped() -> None:
    body = b"\x00\x01" + (_s(b"a") + b"\x00") * 3
    assert check_packet(SUBSCRIBE, 0x02, body, max_filters=3) is None
    assert "more than 2" in (check_packet(SUBSCRIBE, 0x02, body, max_filters=2) or "")
