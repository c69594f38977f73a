"""Raw MQTT bytes, for tests that must see exactly what goes over the wire (or nothing at all)."""

from __future__ import annotations

import asyncio
import contextlib
import struct


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    level: int = 4,
    clean: bool = True,
    keepalive: int = 60,
    will: tuple[str, bytes] | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        flags |= 0x04
        payload += _str(will[0]) + _str(will[1])
    if username is not None:
        flags |= 0x80
        payload += _str(username)
    if password is not None:
        flags |= 0x40
        payload += _str(password)
    variable = _str("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        variable += b"\x00"  # empty properties
    body = variable + payload
    return b"\x10" + _remaining(len(body)) + body


def packet(first_byte: int, body: bytes) -> bytes:
    """Any packet: the first byte (type and flags, as sent, right or wrong) and the body."""
    return bytes([first_byte]) + _remaining(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int = 0) -> bytes:
    return subscribe_many(packet_id, [(topic, qos)])


def subscribe_many(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(t) + bytes([q]) for t, q in filters)
    return packet(0x82, body)


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    return packet(0xA2, struct.pack("!H", packet_id) + b"".join(_str(t) for t in filters))


def publish_packet(
    topic: str | bytes,
    payload: bytes,
    *,
    retain: bool = False,
    packet_id: int | None = None,
    qos: int | None = None,
    dup: bool = False,
) -> bytes:
    """QoS 0, or QoS 1 when a packet id is given (or the QoS given, even an invalid one)."""
    if qos is None:
        qos = 1 if packet_id is not None else 0
    body = _str(topic) + (struct.pack("!H", packet_id) if packet_id is not None else b"") + payload
    return packet(0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0), body)


def ack_packet(kind: int, packet_id: int) -> bytes:
    """PUBACK (4), PUBREC (5), PUBREL (6, flags 0x02) or PUBCOMP (7)."""
    return packet((kind << 4) | (0x02 if kind == 6 else 0), struct.pack("!H", packet_id))


def publish_fields(data: bytes) -> tuple[int, str, int | None, bytes]:
    """(QoS, topic, packet id, payload) of a PUBLISH packet as read by RawClient.read_packet."""
    qos = (data[0] >> 1) & 0x03
    pos = 1
    while data[pos] & 0x80:
        pos += 1
    pos += 1
    size = struct.unpack("!H", data[pos : pos + 2])[0]
    topic = data[pos + 2 : pos + 2 + size].decode()
    pos += 2 + size
    packet_id = None
    if qos:
        packet_id = struct.unpack("!H", data[pos : pos + 2])[0]
        pos += 2
    return qos, topic, packet_id, data[pos:]


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_packet(self, timeout: float = 3.0) -> bytes | None:
        """One whole packet, or None at EOF."""
        try:
            first = await asyncio.wait_for(self.reader.readexactly(1), timeout)
            length, multiplier, raw_len = 0, 1, b""
            while True:
                b = await asyncio.wait_for(self.reader.readexactly(1), timeout)
                raw_len += b
                length += (b[0] & 0x7F) * multiplier
                multiplier *= 128
                if not b[0] & 0x80:
                    break
            body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except asyncio.IncompleteReadError:
            return None
        except ConnectionResetError:
            return None
        return first + raw_len + body

    async def silent_for(self, seconds: float) -> bool:
        """True when nothing at all (no packet, no EOF) arrives for `seconds`."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False
        del data  # a byte or EOF: something happened
        return False

    async def closed_by_peer(self, timeout: float) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def connack(port: int, packet: bytes) -> bytes | None:
    client = await RawClient.open(port)
    try:
        await client.send(packet)
        return await client.read_packet()
    finally:
        await client.close()


async def granted(raw: RawClient, filters: list[str]) -> list[bool]:
    """Subscribes to each filter in turn (QoS 1): whether its SUBACK granted it (a code other than 0x80)."""
    answers = []
    for packet_id, topic_filter in enumerate(filters, start=1):
        await raw.send(subscribe_packet(packet_id, topic_filter, qos=1))
        reply = await raw.read_packet()
        assert reply is not None and reply[0] == 0x90, topic_filter
        answers.append(reply[-1] != 0x80)
    return answers
