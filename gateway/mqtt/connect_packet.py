"""The first packet of a connection: read, checked and parsed here.

amqtt 0.12.1 parses an MQTT 5 CONNECT as 3.1.1 and waits for bytes that never come, reads without
a deadline and turns invalid UTF-8 into the text of a Python bytes literal. We read exactly one
framed packet (bounded size, under the caller's timeout), check it is a well-formed CONNECT for
protocol level 4 ([MQTT-3.1]), and parse its fields.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from .codec import StreamViolation

CONNECT = 0x10
MQTT_311 = 4
MAX_CONNECT_BYTES = 65_536  # client id + will + username + password; far above any real CONNECT
UNACCEPTABLE_PROTOCOL_VERSION = 0x01
IDENTIFIER_REJECTED = 0x02


@dataclass(frozen=True, slots=True)
class ConnectFields:
    client_id: str
    """As sent; one the gateway assigned when the client sent none (clean sessions only)."""
    clean_session: bool
    keep_alive: int
    username: str | None
    password: str | None
    will_topic: str | None
    will_message: bytes | None
    will_qos: int
    will_retain: bool


class ConnectRejected(Exception):
    """The first packet is not an acceptable CONNECT; `return_code` is the CONNACK to send, if any."""

    def __init__(self, reason: str, return_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.return_code = return_code


async def _read(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, OSError) as exc:  # OSError: a reset, or a bad TLS record
        raise ConnectRejected("eof_before_connect") from exc
    except StreamViolation as exc:
        raise ConnectRejected(exc.reason) from exc


async def read_connect_packet(reader: asyncio.StreamReader) -> ConnectFields:
    """The CONNECT's fields. Raises ConnectRejected."""
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
    return _parse(body)


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


def _parse(body: bytes) -> ConnectFields:
    """[MQTT-1.5.3-1/2]: client id, will topic and username must be UTF-8 without U+0000, or the
    connection is closed. The will topic is a topic name: no wildcards [MQTT-3.3.2-2]. Nothing may
    follow the last field. A password is binary data; one that is not UTF-8 cannot match any."""
    name_len = int.from_bytes(body[:2], "big")
    pos = 2 + name_len + 1
    if len(body) < pos + 3:
        raise ConnectRejected("malformed_connect")
    flags = body[pos]
    _check_flags(flags)
    keep_alive = int.from_bytes(body[pos + 1 : pos + 3], "big")
    pos += 3  # flags, keep-alive
    values: dict[str, bytes] = {}
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
        values[field] = value
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
    clean = bool(flags & 0x02)
    client_id = values["client_id"].decode("utf-8")
    if not client_id:  # [MQTT-3.1.3-6/7/8]: the server assigns one, for a clean session only
        if not clean:
            raise ConnectRejected("empty_client_id_persistent", IDENTIFIER_REJECTED)
        client_id = f"auto-{uuid.uuid4().hex}"
    will = "will_topic" in values
    password = values.get("password")
    return ConnectFields(
        client_id=client_id,
        clean_session=clean,
        keep_alive=keep_alive,
        username=values["username"].decode("utf-8") if "username" in values else None,
        password=password.decode("utf-8", errors="replace") if password is not None else None,
        will_topic=values["will_topic"].decode("utf-8") if will else None,
        will_message=values.get("will_message"),
        will_qos=(flags >> 3) & 0x03 if will else 0,
        will_retain=bool(flags & 0x20) if will else False,
    )
