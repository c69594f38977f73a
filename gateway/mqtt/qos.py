"""QoS 1 and 2 towards one client [MQTT-4.3]: packet ids, acknowledgements, and what a resumed
persistent session is sent again [MQTT-4.4.0-1].

The flows belong to the session, not the connection: a message sent and not acknowledged when the
link dropped is sent again on resume with the DUP flag and the same packet id, and one whose PUBREC
had arrived gets its PUBREL again instead, so a QoS 2 message is never delivered twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from .codec import PUBACK, PUBCOMP, PUBREC, PUBREL, encode_ack, encode_publish

# MQTT 3.1.1 resends only on reconnect: a client that acknowledges nothing for this long is closed
# (slow_consumer) and its persistent session gets the message again when it returns.
ACK_TIMEOUT = 5.0
MAX_PACKET_ID = 65_535


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    data: bytes
    qos: int
    retain: bool = False
    droppable: bool = False
    """At most once whatever its QoS (device data): a full queue drops it before closing the session."""

    @property
    def size(self) -> int:
        """What the message holds: a topic can be 65,535 bytes, more than most payloads."""
        return len(self.topic) + len(self.data)


@dataclass(slots=True)
class InFlight:
    packet_id: int
    message: Outgoing
    released: bool = False
    """PUBREC arrived and PUBREL went out: only PUBCOMP is awaited (QoS 2)."""


class Link(Protocol):
    """The connection a flow writes to (gateway/mqtt/connection.py)."""

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class OutgoingFlows:
    def __init__(self) -> None:
        self._in_flight: dict[int, InFlight] = {}
        self._waiters: dict[int, tuple[int, asyncio.Future[None]]] = {}
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._in_flight)

    def in_flight(self) -> list[InFlight]:
        """Unacknowledged messages, oldest first: what a resumed session is sent again."""
        return list(self._in_flight.values())

    async def send(self, link: Link, message: Outgoing, *, keep: bool = True) -> None:
        """Writes the message; for QoS 1/2 returns once it is acknowledged. Raises TimeoutError after
        ACK_TIMEOUT or ConnectionError when the link goes; the message then stays in flight, unless
        `keep` is False (a sender that redelivers by itself, like the event outbox)."""
        if message.qos == 0:
            link.write(encode_publish(message.topic, message.data, 0, 0, retain=message.retain))
            await link.drain()
            return
        flight = InFlight(self._next_id(), message)
        self._in_flight[flight.packet_id] = flight
        try:
            await self._complete(link, flight, dup=False)
        except BaseException:
            if not keep:
                self._in_flight.pop(flight.packet_id, None)
            raise

    async def resend(self, link: Link, flight: InFlight) -> None:
        await self._complete(link, flight, dup=True)

    def acknowledge(self, packet_type: int, packet_id: int) -> bool:
        """PUBACK, PUBREC or PUBCOMP from the client; False when nothing waits for it (a stray)."""
        waiter = self._waiters.get(packet_id)
        if waiter is None or waiter[0] != packet_type or waiter[1].done():
            return False
        waiter[1].set_result(None)
        return True

    def detach(self) -> None:
        """The link is gone: nothing waits for acknowledgements any more; in-flight messages stay."""
        for _, future in self._waiters.values():
            future.cancel()
        self._waiters.clear()

    def discard(self) -> None:
        self.detach()
        self._in_flight.clear()

    async def _complete(self, link: Link, flight: InFlight, *, dup: bool) -> None:
        message, packet_id = flight.message, flight.packet_id
        if not flight.released:
            expected = PUBACK if message.qos == 1 else PUBREC
            waiter = self._expect(expected, packet_id)
            link.write(
                encode_publish(message.topic, message.data, message.qos, packet_id, retain=message.retain, dup=dup)
            )
            await link.drain()
            await self._acknowledged(packet_id, waiter)
            if message.qos == 1:
                self._in_flight.pop(packet_id, None)  # a clean session's discard() may have gone first
                return
            flight.released = True
        waiter = self._expect(PUBCOMP, packet_id)
        link.write(encode_ack(PUBREL, packet_id))
        await link.drain()
        await self._acknowledged(packet_id, waiter)
        self._in_flight.pop(packet_id, None)

    def _expect(self, packet_type: int, packet_id: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[packet_id] = (packet_type, future)
        return future

    async def _acknowledged(self, packet_id: int, waiter: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                await waiter
        finally:
            if self._waiters.get(packet_id, (0, None))[1] is waiter:
                del self._waiters[packet_id]

    def _next_id(self) -> int:
        for _ in range(MAX_PACKET_ID):
            self._last_id = self._last_id % MAX_PACKET_ID + 1
            if self._last_id not in self._in_flight:
                return self._last_id
        raise RuntimeError("every packet id is in flight")
