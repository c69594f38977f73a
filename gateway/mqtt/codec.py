"""MQTT 3.1.1 packets after CONNECT, as bytes: the fixed header read from a stream, bodies decoded
(once packet_checks.py has passed them) and the packets the broker sends, encoded.

Ours, not amqtt's codecs: on a 64-byte PUBLISH amqtt's decode costs 13.8 us and its encode 9.6 us
(an object graph and several awaits per packet); these cost 1.2 us and 0.9 us (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

PINGRESP_BYTES = b"\xd0\x00"
_PACKET_ID = struct.Struct("!H")


class MalformedLength(Exception):
    """A remaining length of more than four bytes [MQTT-2.2.3]."""


class StreamViolation(Exception):
    """The transport under MQTT broke its own rules (a WebSocket text frame, an oversized message):
    raised by the reader instead of the bytes, so the connection ends as a protocol error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FixedHeader:
    packet_type: int
    flags: int
    remaining_length: int


async def read_header_rest(first: int, stream: asyncio.StreamReader) -> FixedHeader:
    """The fixed header whose first byte (type and flags) was `first`: its remaining length."""
    remaining, multiplier = 0, 1
    for _ in range(4):
        byte = (await stream.readexactly(1))[0]
        remaining += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            return FixedHeader(first >> 4, first & 0x0F, remaining)
        multiplier *= 128
    raise MalformedLength("remaining length longer than 4 bytes")


def packet_size(remaining_length: int) -> int:
    """The fixed header (type byte, 1-4 length bytes) and what follows it."""
    length_bytes = 1 + (remaining_length >= 128) + (remaining_length >= 16_384) + (remaining_length >= 2_097_152)
    return 1 + length_bytes + remaining_length


# -- decoding (bodies already checked by packet_checks.check_packet) ----------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    data: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int  # 0 for QoS 0


def decode_publish(flags: int, body: bytes) -> Publish:
    size = _PACKET_ID.unpack_from(body)[0]
    topic = body[2 : 2 + size].decode("utf-8")
    qos = (flags >> 1) & 0x03
    pos = 2 + size
    packet_id = 0
    if qos:
        packet_id = _PACKET_ID.unpack_from(body, pos)[0]
        pos += 2
    return Publish(topic, bytes(body[pos:]), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id)


def decode_packet_id(body: bytes) -> int:
    return int(_PACKET_ID.unpack_from(body)[0])


def decode_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """The packet id and each (filter, requested QoS)."""
    filters: list[tuple[str, int]] = []
    pos = 2
    while pos < len(body):
        size = _PACKET_ID.unpack_from(body, pos)[0]
        filters.append((body[pos + 2 : pos + 2 + size].decode("utf-8"), body[pos + 2 + size]))
        pos += 3 + size
    return decode_packet_id(body), filters


def decode_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    filters: list[str] = []
    pos = 2
    while pos < len(body):
        size = _PACKET_ID.unpack_from(body, pos)[0]
        filters.append(body[pos + 2 : pos + 2 + size].decode("utf-8"))
        pos += 2 + size
    return decode_packet_id(body), filters


# -- encoding --------------------------------------------------------------------------------------------


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def encode_publish(topic: str, data: bytes, qos: int, packet_id: int, *, retain: bool, dup: bool = False) -> bytes:
    name = topic.encode("utf-8")
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    variable = _PACKET_ID.pack(len(name)) + name + (_PACKET_ID.pack(packet_id) if qos else b"")
    return bytes((header,)) + _length(len(variable) + len(data)) + variable + data


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0x02), PUBCOMP or UNSUBACK."""
    flags = 0x02 if packet_type == PUBREL else 0
    return bytes(((packet_type << 4) | flags, 2)) + _PACKET_ID.pack(packet_id)


def encode_suback(packet_id: int, return_codes: list[int]) -> bytes:
    body = _PACKET_ID.pack(packet_id) + bytes(return_codes)
    return bytes((SUBACK << 4,)) + _length(len(body)) + body


def encode_connack(session_present: bool, return_code: int) -> bytes:
    return bytes((CONNACK << 4, 2, 1 if session_present else 0, return_code))
