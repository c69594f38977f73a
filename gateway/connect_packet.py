"""Reading the first packet of a connection ourselves, before amqtt parses it.

amqtt 0.12.1 parses an MQTT 5 CONNECT as 3.1.1 and waits for bytes that never come; it also
reads without a deadline. We read exactly one framed packet (bounded size, under the caller's
timeout), check it is a CONNECT for protocol level 4, and only then hand the bytes to amqtt.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import ReaderAdapter

CONNECT = 0x10
MQTT_311 = 4
MAX_CONNECT_BYTES = 65_536  # client id + will + username + password; far above any real CONNECT
UNACCEPTABLE_PROTOCOL_VERSION = 0x01


class ConnectRejected(Exception):
    """The first packet is not an acceptable CONNECT; `return_code` is the CONNACK to send, if any."""

    def __init__(self, reason: str, return_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.return_code = return_code


async def _read(reader: ReaderAdapter, n: int) -> bytes:
    try:
        data: bytes = await reader.read(n)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ConnectRejected("eof_before_connect") from exc
    if len(data) != n:
        raise ConnectRejected("eof_before_connect")
    return data


async def read_connect_packet(reader: ReaderAdapter) -> bytes:
    """Returns the whole CONNECT packet (fixed header included). Raises ConnectRejected."""
    first = await _read(reader, 1)
    if first[0] != CONNECT:
        raise ConnectRejected("first_packet_not_connect")
    length_bytes = b""
    remaining, multiplier = 0, 1
    while True:
        byte = await _read(reader, 1)
        length_bytes += byte
        remaining += (byte[0] & 0x7F) * multiplier
        if not byte[0] & 0x80:
            break
        multiplier *= 128
        if len(length_bytes) >= 4:
            raise ConnectRejected("malformed_remaining_length")
    if remaining > MAX_CONNECT_BYTES:
        raise ConnectRejected("connect_too_large")
    body = await _read(reader, remaining)
    _check_protocol(body)
    _check_strings(body)
    return first + length_bytes + body


def _check_protocol(body: bytes) -> None:
    if len(body) < 2:
        raise ConnectRejected("malformed_connect")
    name_len = int.from_bytes(body[:2], "big")
    if len(body) < 2 + name_len + 1:
        raise ConnectRejected("malformed_connect")
    name = body[2 : 2 + name_len]
    level = body[2 + name_len]
    if name not in (b"MQTT", b"MQIsdp"):
        raise ConnectRejected("unknown_protocol_name")
    if name != b"MQTT" or level != MQTT_311:
        # MQTT 3.1 ("MQIsdp"), MQTT 5 and anything else: [MQTT-3.1.2-2] CONNACK 0x01, then close.
        raise ConnectRejected(f"unsupported_protocol_level_{level}", UNACCEPTABLE_PROTOCOL_VERSION)


def _check_flags(flags: int) -> None:
    """[MQTT-3.1.2-3, -11, -13, -14, -15, -22]: the connect flags must be consistent."""
    will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    if flags & 0x01:
        raise ConnectRejected("reserved_connect_flag")
    if will and will_qos == 3:
        raise ConnectRejected("will_qos_3")
    if not will and (will_qos or flags & 0x20):
        raise ConnectRejected("will_flags_without_will")
    if flags & 0x40 and not flags & 0x80:
        raise ConnectRejected("password_without_username")


def _check_strings(body: bytes) -> None:
    """[MQTT-1.5.3-1/2]: client id, will topic and username must be UTF-8 without U+0000, or the
    connection is closed. (amqtt would turn invalid bytes into the text of a Python bytes literal.)
    The will topic is a topic name: no wildcards [MQTT-3.3.2-2]. Nothing may follow the last field."""
    name_len = int.from_bytes(body[:2], "big")
    pos = 2 + name_len + 1
    if len(body) < pos + 3:
        raise ConnectRejected("malformed_connect")
    flags = body[pos]
    _check_flags(flags)
    pos += 3  # flags, keep-alive
    fields = ["client_id"]
    if flags & 0x04:
        fields += ["will_topic", "will_message"]
    if flags & 0x80:
        fields.append("username")
    if flags & 0x40:
        fields.append("password")
    for field in fields:
        if len(body) < pos + 2:
            raise ConnectRejected("malformed_connect")
        size = int.from_bytes(body[pos : pos + 2], "big")
        value = body[pos + 2 : pos + 2 + size]
        if len(value) != size:
            raise ConnectRejected("malformed_connect")
        pos += 2 + size
        if field in ("will_message", "password"):
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectRejected("invalid_utf8") from None
        if "\x00" in text:
            raise ConnectRejected("invalid_utf8")
        if field == "will_topic" and (not text or "+" in text or "#" in text):
            raise ConnectRejected("invalid_will_topic")
    if pos != len(body):
        raise ConnectRejected("trailing_bytes_in_connect")
