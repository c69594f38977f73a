"""The CONNECT reader and parser (gateway/mqtt/connect_packet.py), directly: pure, no gateway."""

from __future__ import annotations

import asyncio

import pytest

from gateway.mqtt.connect_packet import ConnectFields, ConnectRejected, read_connect_packet

from .wire import connect_packet


async def _parse(data: bytes) -> ConnectFields:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_connect_packet(reader)


async def _rejected(data: bytes) -> ConnectRejected:
    with pytest.raises(ConnectRejected) as caught:
        await _parse(data)
    return caught.value


async def test_fields_of_a_full_connect() -> None:
    data = connect_packet("c-1", "user@acme", "pässword", clean=False, keepalive=30)
    fields = await _parse(data)
    assert fields == ConnectFields("c-1", False, 30, "user@acme", "pässword", None, None, 0, False)


async def test_a_will_is_parsed_with_its_qos_and_retain() -> None:
    # CONNECT, level 4, flags: username, will retain, will QoS 1, will, clean
    body = b"\x00\x04MQTT\x04" + bytes([0x80 | 0x20 | 0x08 | 0x04 | 0x02]) + b"\x00\x3c"
    body += b"\x00\x01c" + b"\x00\x03w/t" + b"\x00\x02hi" + b"\x00\x01u"
    fields = await _parse(bytes([0x10, len(body)]) + body)
    assert (fields.will_topic, fields.will_message, fields.will_qos, fields.will_retain) == ("w/t", b"hi", 1, True)


async def test_an_empty_client_id_is_assigned_for_a_clean_session_only() -> None:
    fields = await _parse(connect_packet("", "u"))
    assert fields.client_id.startswith("auto-") and len(fields.client_id) == 37
    rejected = await _rejected(connect_packet("", "u", clean=False))
    assert (rejected.reason, rejected.return_code) == ("empty_client_id_persistent", 0x02)  # [MQTT-3.1.3-8]


@pytest.mark.parametrize(
    ("data", "reason", "code"),
    [
        (connect_packet("c", "u", level=5), "unsupported_protocol_level_5", 0x01),
        (connect_packet("c", "u", level=3), "unsupported_protocol_level_3", 0x01),
        (b"\x30\x02\x00\x00", "first_packet_not_connect", None),
        (b"\x10\xff\xff\xff\xff\x01", "malformed_remaining_length", None),
        (b"\x10\x80\x80\x10", "connect_too_large", None),
        (connect_packet("c", "u")[:-1], "eof_before_connect", None),
        (b"", "eof_before_connect", None),
    ],
)
async def test_what_is_refused_and_how(data: bytes, reason: str, code: int | None) -> None:
    rejected = await _rejected(data)
    assert (rejected.reason, rejected.return_code) == (reason, code)


async def test_invalid_utf8_and_nul_in_strings_are_refused() -> None:
    body = b"\x00\x04MQTT\x04\x82\x00\x3c" + b"\x00\x01c" + b"\x00\x02\xc3\x28"  # username not UTF-8
    assert (await _rejected(bytes([0x10, len(body)]) + body)).reason == "invalid_utf8"
    body = b"\x00\x04MQTT\x04\x82\x00\x3c" + b"\x00\x01c" + b"\x00\x02a\x00"
    assert (await _rejected(bytes([0x10, len(body)]) + body)).reason == "invalid_utf8"


async def test_a_password_that_is_not_utf8_still_parses_and_can_match_nothing() -> None:
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x01c" + b"\x00\x01u" + b"\x00\x02\xff\xfe"
    fields = await _parse(bytes([0x10, len(body)]) + body)
    assert fields.password == "\ufffd\ufffd"
