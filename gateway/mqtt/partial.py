"""Packets read whole, each within a deadline, with the bytes of partly received ones bounded node-wide.

A packet's first byte starts its deadline, `packet_timeout`, whatever the keep-alive: keep-alive
bounds the silence between packets (and still ends a packet if it expires first), so with keep-alive 0
nothing else would ever end a packet that stops halfway.

The bytes of a packet that has not fully arrived are held in memory while the reader waits for the
rest; all connections' together (and those of WebSocket frames not yet whole, websocket.py) are
bounded by `max_partial_packet_bytes`. The connection whose bytes would go over it is closed, and its
bytes freed at once: the packets already being received complete, whereas making it wait would let a
set of half-received packets each wait for room the others hold until their deadlines. A packet that
is whole in the socket buffer when its reading starts is read at once and never counted, so at the
bound every connection sending small packets goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .codec import FixedHeader, StreamViolation, read_header_rest

T = TypeVar("T")
LIMIT_NAME = "max_partial_packet_bytes"


class PacketTimeout(StreamViolation):
    """A packet (or WebSocket frame) was not complete `packet_timeout` seconds after its first byte."""

    def __init__(self, timeout: float) -> None:
        super().__init__("packet_timeout", f"a packet not complete {timeout:g} s after its first byte")


class PartialPacketsFull(StreamViolation):
    """Holding more of this connection's partly received packet would go over the node's bound."""

    def __init__(self, limit: int) -> None:
        super().__init__("partial_packets_full", f"partly received packets on this node at {LIMIT_NAME} ({limit})")


class PartialPackets:
    """The node's bytes held in partly received packets, and the deadline of every packet."""

    def __init__(self, limit: int, timeout: float, metrics: Metrics) -> None:
        self.limit = limit
        self.timeout = timeout
        self.held = 0
        self._metrics = metrics

    @classmethod
    def of(cls, settings: GatewaySettings, metrics: Metrics) -> PartialPackets:
        return cls(settings.max_partial_packet_bytes, settings.packet_timeout, metrics)

    def take(self, n: int) -> None:
        """Counts `n` more bytes held. Raises PartialPacketsFull (and counts it) when over the bound."""
        if self.held + n > self.limit:
            self._metrics.limits_hit[LIMIT_NAME] += 1
            raise PartialPacketsFull(self.limit)
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n


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
        try:
            while got < size:
                chunk = await self._stream.read(size - got)  # what the buffer has, or the next bytes to come
                if not chunk:
                    raise asyncio.IncompleteReadError(b"".join(parts), size)
                parts.append(chunk)
                got += len(chunk)
                if got < size:  # the rest is still to come: what we have is held meanwhile
                    self._partial.take(len(chunk))
                    held += len(chunk)
        finally:
            self._partial.give(held)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class PartialFrame:
    """A WebSocket frame being received and not yet whole (`buffered`: its bytes in the protocol's
    parser): counted against the node's bound, and timed from when it began."""

    def __init__(self, buffered: Callable[[], int], partial: PartialPackets) -> None:
        self._buffered = buffered
        self.partial = partial
        self._held = 0
        self.deadline: float | None = None

    def count(self) -> StreamViolation | None:
        """After the protocol took new bytes: None, or the violation when they go over the bound."""
        waiting = self._buffered()
        if waiting == 0:
            self.deadline = None
        elif self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.partial.timeout
        try:
            if waiting > self._held:
                self.partial.take(waiting - self._held)
            else:
                self.partial.give(self._held - waiting)
        except StreamViolation as full:
            return full
        self._held = waiting
        return None

    def release(self) -> None:
        self.partial.give(self._held)
        self._held = 0
