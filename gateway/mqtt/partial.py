"""Packets read whole, each within a deadline, with the bytes of partly received ones bounded node-wide.

A packet's first byte starts its deadline, `packet_timeout`, whatever the keep-alive: keep-alive
bounds the silence between packets (and still ends a packet if it expires first), so with keep-alive 0
nothing else would ever end a packet that stops halfway. The deadline is enforced by a sweep of the
node's connections, 4 times per `packet_timeout` (at most every second).

The bytes of a packet that has not fully arrived are held in memory while the reader waits for the
rest; all connections' together (and those of WebSocket frames not yet whole, websocket.py) are
bounded by `max_partial_packet_bytes`, and one tenant's connections' by `tenant_partial_packets_share`
of it (sockets not past CONNECT yet count together as one more tenant), so one tenant filling the bound
leaves room to the others. The connection whose bytes would go over either is closed, and its
bytes freed at once: the packets already being received complete, whereas making it wait would let a
set of half-received packets each wait for room the others hold until their deadlines. A packet that
is whole in the socket buffer when its reading starts is read at once and never counted, so at the
bound every connection sending small packets goes on.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Callable

from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .codec import FixedHeader, StreamViolation, read_header_rest
from .packet_checks import check_header

LIMIT_NAME = "max_partial_packet_bytes"
TENANT_LIMIT_NAME = "tenant_partial_packets_share"
ANONYMOUS = ""
"""Whose bytes they are before CONNECT has named a tenant (no tenant id is empty)."""


class PacketTimeout(StreamViolation):
    """A packet (or WebSocket frame) was not complete `packet_timeout` seconds after its first byte."""

    def __init__(self, timeout: float) -> None:
        super().__init__("packet_timeout", f"a packet not complete {timeout:g} s after its first byte")


class PacketRefused(StreamViolation):
    """Its fixed header already breaks a rule (too large, a type a client may not send now)."""

    def __init__(self, problem: str) -> None:
        super().__init__("protocol_error", problem)


class PartialPacketsFull(StreamViolation):
    """Holding more of this connection's partly received packet would go over the node's bound."""

    def __init__(self, limit_name: str, limit: int) -> None:
        super().__init__("partial_packets_full", f"partly received packets at {limit_name} ({limit} bytes)")


class PartialPackets:
    """The bytes held in partly received packets, node-wide and per tenant, and every packet's deadline."""

    def __init__(self, limit: int, tenant_limit: int, timeout: float, metrics: Metrics) -> None:
        self.limit = limit
        self.tenant_limit = tenant_limit
        self.timeout = timeout
        self.held = 0
        self.held_by: Counter[str] = Counter()
        self._metrics = metrics
        self._tenants: weakref.WeakKeyDictionary[asyncio.StreamReader, str] = weakref.WeakKeyDictionary()
        self._readers: weakref.WeakSet[PacketReader] = weakref.WeakSet()

    @classmethod
    def of(cls, settings: GatewaySettings, metrics: Metrics) -> PartialPackets:
        limit = settings.max_partial_packet_bytes
        return cls(limit, int(limit * settings.tenant_partial_packets_share), settings.packet_timeout, metrics)

    def watch(self, reader: PacketReader) -> None:
        self._readers.add(reader)

    async def sweep(self) -> None:
        """Forever: ends the packets begun more than `timeout` ago. One sweep for every connection,
        not a timer per packet (a timer costs ~5 us, as much again as reading a small PUBLISH)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            horizon = loop.time() - self.timeout
            for reader in list(self._readers):
                if reader.started_at is not None and reader.started_at < horizon:
                    reader.expire()

    def bind(self, stream: asyncio.StreamReader, tenant_id: str) -> None:
        """From now on, what `stream` holds is the tenant's (its CONNECT named it)."""
        self._tenants[stream] = tenant_id

    def owner(self, stream: asyncio.StreamReader) -> str:
        return self._tenants.get(stream, ANONYMOUS)

    def take(self, n: int, owner: str) -> None:
        """Counts `n` more bytes held for `owner`. Raises PartialPacketsFull (and counts it) when over
        the node's bound or the owner's share of it."""
        if self.held + n > self.limit:
            self._refuse(LIMIT_NAME, self.limit)
        if self.held_by[owner] + n > self.tenant_limit:
            self._refuse(TENANT_LIMIT_NAME, self.tenant_limit)
        self.held += n
        self.held_by[owner] += n

    def give(self, n: int, owner: str) -> None:
        self.held -= n
        self.held_by[owner] -= n
        if self.held_by[owner] <= 0:
            del self.held_by[owner]

    def _refuse(self, name: str, limit: int) -> None:
        self._metrics.limits_hit[name] += 1
        raise PartialPacketsFull(name, limit)


class PacketReader:
    """One connection's packets. Raises TimeoutError when keep-alive expires (before or during a
    packet), PacketTimeout (the node's sweep found the packet begun too long ago), PartialPacketsFull,
    PacketRefused, codec.MalformedLength, and what the stream raises (asyncio.IncompleteReadError at an
    EOF inside a packet)."""

    def __init__(self, stream: asyncio.StreamReader, partial: PartialPackets, max_packet_bytes: int) -> None:
        self._stream = stream
        self._partial = partial
        self._max_packet_bytes = max_packet_bytes
        self._loop = asyncio.get_running_loop()
        self.started_at: float | None = None
        """When the packet being read had its first byte (loop time); None between packets."""
        partial.watch(self)

    async def next(self, keep_alive: float | None) -> tuple[FixedHeader, bytes] | None:
        """The next packet, waiting at most `keep_alive` seconds (None: forever) for it whole; None at
        an EOF before its first byte."""
        async with asyncio.timeout(keep_alive):
            first = await self._stream.read(1)
            if not first:
                return None
            self.started_at = self._loop.time()
            try:
                header = await read_header_rest(first[0], self._stream)
                if (problem := check_header(header, self._max_packet_bytes)) is not None:
                    raise PacketRefused(problem)
                body = await self._read(header.remaining_length) if header.remaining_length else b""
            finally:
                self.started_at = None
            return header, body

    def expire(self) -> None:
        """The packet is over its deadline: the read waiting for the rest raises PacketTimeout."""
        self._stream.set_exception(PacketTimeout(self._partial.timeout))

    async def _read(self, size: int) -> bytes:
        chunk = await self._stream.read(size)  # what the buffer has, or the next bytes to come
        return chunk if len(chunk) == size else await self._read_rest(chunk, size)

    async def _read_rest(self, chunk: bytes, size: int) -> bytes:
        """The rest of a packet not whole in the buffer: what has come is held (and counted) meanwhile."""
        parts: list[bytes] = []
        got = held = 0
        owner = self._partial.owner(self._stream)
        try:
            while True:
                if not chunk:
                    raise asyncio.IncompleteReadError(b"".join(parts), size)
                parts.append(chunk)
                got += len(chunk)
                if got == size:
                    return b"".join(parts)
                self._partial.take(len(chunk), owner)
                held += len(chunk)
                chunk = await self._stream.read(size - got)
        finally:
            self._partial.give(held, owner)


class PartialFrame:
    """A WebSocket frame being received and not yet whole (`buffered`: its bytes in the protocol's
    parser): counted against the bounds as the bytes of `stream` (MQTT's reader over the WebSocket),
    and timed from when it began."""

    def __init__(self, buffered: Callable[[], int], partial: PartialPackets, stream: asyncio.StreamReader) -> None:
        self._buffered = buffered
        self.partial = partial
        self._stream = stream
        self._held = 0
        self._owner = ANONYMOUS
        self.deadline: float | None = None

    def count(self) -> StreamViolation | None:
        """After the protocol took new bytes: None, or the violation when they go over a bound."""
        waiting = self._buffered()
        if waiting == 0:
            self.deadline = None
        elif self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.partial.timeout
        owner = self.partial.owner(self._stream)
        if owner != self._owner:  # CONNECT named the tenant: what is held is its own now
            self.release()
            self._owner = owner
        try:
            if waiting > self._held:
                self.partial.take(waiting - self._held, owner)
            else:
                self.partial.give(self._held - waiting, owner)
        except StreamViolation as full:
            return full
        self._held = waiting
        return None

    def release(self) -> None:
        self.partial.give(self._held, self._owner)
        self._held = 0
