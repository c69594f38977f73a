"""MQTT 3.1.1 rules on the raw bytes of a packet after CONNECT, checked before it is decoded.

Each check returns None or the violation in words; the caller closes the connection ([MQTT-4.8.0-1]).
amqtt's codecs accept things the standard forbids (QoS 3, wrong fixed-header flags, a SUBSCRIBE
without filters) and turn invalid UTF-8 into the text of a Python bytes literal.
"""

from __future__ import annotations

from .codec import (
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    FixedHeader,
)

# Fixed-header flags each packet type must carry [MQTT-2.2.2-1/2]; PUBLISH's are its own.
_REQUIRED_FLAGS = {
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 0x02,
    PUBCOMP: 0,
    SUBSCRIBE: 0x02,
    UNSUBSCRIBE: 0x02,
    PINGREQ: 0,
    DISCONNECT: 0,
}


def check_header(header: FixedHeader, max_packet_bytes: int) -> str | None:
    """Before the body is read: its size, and a type a client may send after CONNECT."""
    if header.remaining_length > max_packet_bytes:
        return f"packet of {header.remaining_length} bytes over the limit"
    if header.packet_type != PUBLISH and header.packet_type not in _REQUIRED_FLAGS:
        return f"unexpected packet type {header.packet_type}"  # a second CONNECT, a CONNACK, a reserved type
    return None


def check_flags(packet_type: int, flags: int) -> str | None:
    if packet_type == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            return "PUBLISH with QoS 3"  # [MQTT-3.3.1-4]
        if qos == 0 and flags & 0x08:
            return "QoS 0 PUBLISH with the DUP flag"  # [MQTT-3.3.1-2]
        return None
    required = _REQUIRED_FLAGS.get(packet_type)
    if required is not None and flags != required:
        return f"packet type {packet_type} with fixed-header flags {flags:#x}"
    return None


def _text(data: bytes, what: str) -> str | None:
    """[MQTT-1.5.3-1/2]: well-formed UTF-8 without U+0000."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{what} is not UTF-8"
    if "\x00" in text:
        return f"{what} contains U+0000"
    return None


def _strings(body: bytes, start: int, trailer: int) -> tuple[list[bytes], str | None]:
    """Length-prefixed strings from `start` to the end, each followed by `trailer` bytes."""
    found: list[bytes] = []
    pos = start
    while pos < len(body):
        if pos + 2 > len(body):
            return found, "truncated string length"
        size = int.from_bytes(body[pos : pos + 2], "big")
        end = pos + 2 + size
        if end + trailer > len(body):
            return found, "string runs past the packet"
        found.append(body[pos + 2 : end])
        pos = end + trailer
    return found, None


def check_publish(flags: int, body: bytes) -> str | None:
    if len(body) < 2:
        return "PUBLISH without a topic"
    size = int.from_bytes(body[:2], "big")
    if 2 + size + (2 if (flags >> 1) & 0x03 else 0) > len(body):
        return "PUBLISH topic runs past the packet"
    if (flags >> 1) & 0x03 and body[2 + size : 4 + size] == b"\x00\x00":
        return "PUBLISH with packet identifier 0"  # [MQTT-2.3.1-1]
    topic = body[2 : 2 + size]
    if not topic:
        return "PUBLISH with an empty topic"  # [MQTT-4.7.3-1]
    if (problem := _text(topic, "PUBLISH topic")) is not None:
        return problem
    if b"+" in topic or b"#" in topic:
        return "PUBLISH topic with a wildcard"  # [MQTT-3.3.2-2]
    return None


def check_filters(body: bytes, *, subscribe: bool, max_filters: int | None = None) -> str | None:
    """SUBSCRIBE (each filter followed by a requested-QoS byte) or UNSUBSCRIBE: a packet id that is not 0,
    at least one filter [MQTT-3.8.3-3, 3.10.3-2], none empty [MQTT-4.7.3-1], all UTF-8."""
    name = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
    if body[:2] == b"\x00\x00":
        return f"{name} with packet identifier 0"  # [MQTT-2.3.1-1]
    trailer = 1 if subscribe else 0
    filters, problem = _strings(body, 2, trailer)
    if problem is not None:
        return f"{name}: {problem}"
    if not filters:
        return f"{name} without a topic filter"
    if max_filters is not None and len(filters) > max_filters:
        return f"{name} with more than {max_filters} topic filters"
    pos = 2
    for topic_filter in filters:
        pos += 2 + len(topic_filter)
        if subscribe and body[pos] > 2:  # requested QoS 3, or reserved bits set [MQTT-3.8.3-4]
            return f"SUBSCRIBE with requested QoS byte {body[pos]:#x}"
        pos += trailer
        if not topic_filter:
            return f"{name} with an empty topic filter"
        if (problem := _text(topic_filter, f"{name} topic filter")) is not None:
            return problem
    return None


# Packets whose remaining length is fixed by the standard ([MQTT-3.4.1] ... [MQTT-3.14.1]).
_FIXED_LENGTH = {PUBACK: 2, PUBREC: 2, PUBREL: 2, PUBCOMP: 2, PINGREQ: 0, DISCONNECT: 0}


def check_packet(packet_type: int, flags: int, body: bytes, max_filters: int | None = None) -> str | None:
    """The whole-packet checks, in the order a reader should apply them."""
    if (problem := check_flags(packet_type, flags)) is not None:
        return problem
    length = _FIXED_LENGTH.get(packet_type)
    if length is not None and len(body) != length:
        return f"packet type {packet_type} with a remaining length of {len(body)}, not {length}"
    if packet_type == PUBLISH:
        return check_publish(flags, body)
    if packet_type in (SUBSCRIBE, UNSUBSCRIBE):
        return check_filters(body, subscribe=packet_type == SUBSCRIBE, max_filters=max_filters)
    return None
