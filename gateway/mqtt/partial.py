"""Packets read whole, each within a deadline, with the bytes of partly received ones bounded node-wide.

A packet's first byte starts its deadline, `packet_timeout`, whatever the keep-alive: keep-alive
bounds the silence between packets (and still ends a packet if it expires first), so with keep-alive 0
nothing else would ever end a packet that stops halfway.

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
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .codec import FixedHeader, StreamViolation, read_header_rest

T = TypeVar("T")
LIMIT_NAME = "max_partial_packet_bytes"
TENANT_LIMIT_NAME = "tenant_partial_packets_share"
ANONYMOUS = ""
"""Whose bytes they are before CONNECT has named a tenant (no tenant id is empty)."""


class PacketTimeout(StreamViolation):
    """A packet (or WebSocket frame) was not complete `packet_timeout` seconds after its first byte."""

    def __init__(self, timeout: float) -> None:
        super().__init__("packet_timeout", f"a packet not complete {timeout:g} s after its first byte")


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

    @classmethod
    def of(cls, settings: GatewaySettings, metrics: Metrics) -> PartialPackets:
        limit = settings.max_partial_packet_bytes
        return cls(limit, int(limit * settings.tenant_partial_packets_share), settings.packet_timeout, metrics)

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
    """One connection's packets, each under its deadline. Raises TimeoutError when keep-alive expires
    (before or during a packet), PacketTimeout, PartialPacketsFull, codec.MalformedLength, and what the
    stream raises (asyncio.IncompleteReadError at an EOF inside a packet)."""

    def __init__(self, stream: asyncio.StreamReader, partial: PartialPackets) -> None:
        self._stream = stream
        self._partial = partial
        self._keep_alive_at: float | None = None
        self._packet_at = 0.0

    async def header(self, keep_alive: float | None) -> FixedHeader | None:
        """The next fixed header, waiting at most `keep_alive` seconds (None: forever) for its first
        byte; None at an EOF before it."""
        loop = asyncio.get_running_loop()
        self._keep_alive_at = None if keep_alive is None else loop.time() + keep_alive
        async with asyncio.timeout_at(self._keep_alive_at):
            first = await self._stream.read(1)
        if not first:
            return None
        self._packet_at = loop.time() + self._partial.timeout
        return await self._within(read_header_rest(first[0], self._stream))

    async def body(self, header: FixedHeader) -> bytes:
        """The packet's body, by its deadline (call after `header`)."""
        if header.remaining_length == 0:
            return b""
        return await self._within(self._read(header.remaining_length))

    async def _within(self, step: Awaitable[T]) -> T:
        keep_alive_first = self._keep_alive_at is not None and self._keep_alive_at < self._packet_at
        try:
            async with asyncio.timeout_at(self._keep_alive_at if keep_alive_first else self._packet_at):
                return await step
        except TimeoutError:
            if keep_alive_first:
                raise
            raise PacketTimeout(self._partial.timeout) from None

    async def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = held = 0
        owner = self._partial.owner(self._stream)
        try:
            while got < size:
                chunk = await self._stream.read(size - got)  # what the buffer has, or the next bytes to come
                if not chunk:
                    raise asyncio.IncompleteReadError(b"".join(parts), size)
                parts.append(chunk)
                got += len(chunk)
                if got < size:  # the rest is still to come: what we have is held meanwhile
                    self._partial.take(len(chunk), owner)
                    held += len(chunk)
        finally:
            self._partial.give(held, owner)
        return parts[0] if len(parts) == 1 else b"".join(parts)


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
