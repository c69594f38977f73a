"""One client connection after its CONNECT: the reader loop, the incoming QoS flows, SUBSCRIBE,
UNSUBSCRIBE, PINGREQ, DISCONNECT, and why it closed.

Every packet is bounded in size, read whole within `packet_timeout` of its first byte (partial.py),
and checked against MQTT 3.1.1 before it is decoded (packet_checks.py); any violation closes the
connection [MQTT-4.8.0-1]. Keep-alive is enforced: no packet for 1.5 x the client's keep-alive
closes it [MQTT-3.1.2-24]. A PUBLISH is acknowledged only
once the broker is done with it (routed, or its 10/EPMP write committed), so an acknowledged
message is never lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from registry.models import now_ms

from ..auth.identity import identity_of
from ..auth.ratelimit import TokenBucket
from ..node.context import GatewayServices
from . import codec
from .codec import FixedHeader, Publish
from .packet_checks import check_packet
from .partial import PacketReader, PacketTimeout, PartialPackets, PartialPacketsFull
from .qos import OutgoingFlows
from .session import ClientSession

log = logging.getLogger(__name__)

WRITER_CLOSE_TIMEOUT = 5.0
# Packets read but not yet handled, per connection: beyond this the reader stops reading (TCP pushes
# back on the client) until the oldest is done.
MAX_UNFINISHED_PACKETS = 64
# Bytes written to a client and not yet taken by its socket, beyond which the reader waits (a client
# that sends and never reads must not grow our buffer with its acknowledgements).
WRITE_HIGH_WATER = 65_536
# Packets handled from one connection's buffer before the reader lets the others run: a client that
# pipelines a flood must not hold the event loop (reads from a full buffer never wait). It also lets
# them run once its packets took `reader_turn_ms` of work, however few: one expensive packet after
# another must not hold it either.
PACKETS_PER_TURN = 32
# What handling one packet may take before the rest is charged to its sender's `reader_ms_per_second`:
# a publish to a few subscribers, a small request, cost tens of microseconds.
FREE_PACKET_SECONDS = 0.000_1


class CloseReason:
    """Reason codes written to the connection log."""

    CLIENT_DISCONNECT = "client_disconnect"
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    SOCKET_ERROR = "socket_error"
    TAKEN_OVER = "session_taken_over"
    KICKED = "kicked_by_operator"
    SHUTDOWN = "gateway_shutdown"
    RESTART = "gateway_restart"
    PROTOCOL_ERROR = "protocol_error"
    SLOW_CONSUMER = "slow_consumer"
    PACKET_TIMEOUT = "packet_timeout"
    PARTIAL_PACKETS_FULL = "partial_packets_full"


class SessionHandler(Protocol):
    """What the broker does with a client's requests (gateway/mqtt/broker.py)."""

    def received(self, connection: Connection, publish: Publish) -> Awaitable[None] | None:
        """Routes or answers a PUBLISH; an awaitable when its acknowledgement must wait (10/EPMP)."""

    def subscribe(self, session: ClientSession, topic_filter: str, qos: int) -> int: ...

    def subscribed(self, session: ClientSession, granted: list[tuple[str, int]]) -> None: ...

    def unsubscribe(self, session: ClientSession, topic_filter: str) -> None: ...


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: ClientSession,
        flows: OutgoingFlows,
        handler: SessionHandler,
        services: GatewayServices,
        partial: PartialPackets,
        work: TokenBucket | None = None,
        received: TokenBucket | None = None,
    ) -> None:
        settings, metrics = services.settings, services.metrics
        self.reader = reader
        identity = identity_of(session)
        if identity is not None:
            partial.bind(reader, identity.tenant_id)
        self._packets = PacketReader(reader, partial, settings.max_packet_bytes)
        self._work = work
        """The sender's bucket of milliseconds its expensive packets may take; None: not metered."""
        self._received = received
        """The sender's bucket of bytes it may send; None: not metered."""
        self._metrics = metrics
        self.writer = writer
        self.session = session
        self.flows = flows
        self._handler = handler
        self._max_qos2 = settings.max_qos2_awaiting_pubrel
        self._stall_timeout = settings.slow_consumer_timeout
        self._turn_seconds = settings.reader_turn_ms / 1000
        self._max_filters = max(1000, settings.max_subscriptions_per_session)
        self.close_reason: str | None = None
        self.close_detail: str | None = None
        self.disconnect_received = False
        """The client said DISCONNECT: its will is not published [MQTT-3.1.2-10], however it then ended."""
        self.connack_sent = False
        self.connected_at = now_ms()
        """Names this connection's row in the registry (a takeover's late end must not close the next)."""
        self.discard_session = False
        self.stray_acks = 0
        self.reader_done = asyncio.Event()
        """Set when the reader loop has ended for good, however early (no ghost sessions)."""

    # -- writing -------------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """One whole packet: counted for `/metrics` (a PUBLISH as a message too)."""
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.writer.transport.write(data)
        self._metrics.bytes_out += len(data)
        if data[0] >> 4 == codec.PUBLISH:
            self._metrics.messages_out += 1

    async def drain(self) -> None:
        """Waits while the client reads too slowly; after `slow_consumer_timeout` it is closed."""
        if self.writer.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        try:
            async with asyncio.timeout(self._stall_timeout):
                await self.writer.drain()
        except TimeoutError:
            self.close(CloseReason.SLOW_CONSUMER, "did not read what was sent to it")
            raise ConnectionResetError("the peer stopped reading") from None

    def close(self, reason: str, detail: str | None = None, *, discard_session: bool = False) -> None:
        """Ends the connection now; the first reason given is the one logged."""
        if self.close_reason is None:
            self.close_reason, self.close_detail = reason, detail
        self.discard_session = self.discard_session or discard_session
        self.writer.transport.abort()

    @property
    def closing(self) -> bool:
        return self.writer.transport.is_closing()

    @property
    def ending(self) -> bool:
        return self.close_reason is not None or self.reader_done.is_set()

    # -- reading -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Reads and handles packets until the client leaves, breaks the protocol or is closed."""
        keep_alive = self.session.keep_alive * 1.5 or None
        running: collections.deque[asyncio.Future[Any]] = collections.deque()
        handled, busy = 0, 0.0  # packets and seconds of work since the reader last let the others run
        try:
            while self.close_reason is None:  # closed by us: what the client sent after is not read
                while running and (running[0].done() or len(running) >= MAX_UNFINISHED_PACKETS):
                    await asyncio.wait({running[0]})  # back-pressure: read on once the oldest is done
                    _retrieve(running.popleft())
                if (wait := self._wait_for_budget()) > 0:  # TCP pushes back meanwhile
                    await asyncio.sleep(min(wait, 0.1))  # a close ends the wait
                    continue
                try:
                    packet = await self._packets.next(keep_alive)
                    if packet is None:  # EOF
                        break
                    header, body = packet
                    self._metrics.bytes_in += codec.packet_size(header.remaining_length)
                    if self._received is not None:
                        self._received.charge(codec.packet_size(header.remaining_length))
                except TimeoutError:
                    self.close(CloseReason.KEEPALIVE_TIMEOUT)
                    break
                except PacketTimeout as exc:
                    self.close(CloseReason.PACKET_TIMEOUT, str(exc))
                    break
                except PartialPacketsFull as exc:
                    self.close(CloseReason.PARTIAL_PACKETS_FULL, str(exc))
                    break
                except (codec.MalformedLength, codec.StreamViolation) as exc:
                    self.close(CloseReason.PROTOCOL_ERROR, str(exc))
                    break
                started = time.perf_counter()
                violation = check_packet(header.packet_type, header.flags, body, self._max_filters)
                if violation is not None:
                    self.close(CloseReason.PROTOCOL_ERROR, violation)
                    break
                if header.packet_type == codec.DISCONNECT:
                    self.disconnect_received = True
                    if running:  # the client closes right after it; its earlier packets count
                        await asyncio.wait(running, timeout=WRITER_CLOSE_TIMEOUT)
                    if self.close_reason is None:
                        self.close_reason = CloseReason.CLIENT_DISCONNECT
                    break
                pending = self._handle(header, body)
                if pending is not None:
                    running.append(asyncio.ensure_future(pending))
                handled += 1
                took = time.perf_counter() - started
                busy += took
                if took > FREE_PACKET_SECONDS and self._work is not None:
                    self._work.charge((took - FREE_PACKET_SECONDS) * 1000)
                if handled % PACKETS_PER_TURN == 0 or busy > self._turn_seconds:
                    busy = 0.0
                    await asyncio.sleep(0)
                if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await self.drain()
        except asyncio.CancelledError:
            pass
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the peer went away mid-packet: a socket error
        except Exception:
            log.exception("reader loop failed")
            self.close(CloseReason.PROTOCOL_ERROR, "internal error")
        finally:
            # Packets already read are still handled (a PUBLISH right before the socket closed),
            # within a bound; only then is the connection reported closed.
            unfinished = [t for t in running if not t.done()]
            if unfinished and self.close_reason not in (CloseReason.TAKEN_OVER, CloseReason.KICKED):
                await asyncio.wait(unfinished, timeout=WRITER_CLOSE_TIMEOUT)
            for task in running:
                task.cancel()
                task.add_done_callback(_retrieve)
            self.reader_done.set()

    def _wait_for_budget(self) -> float:
        """Seconds until the sender may be read on: while its packets' work (`reader_ms_per_second`) or
        bytes (`reader_bytes_per_second`) are over its budget."""
        for bucket, limit in ((self._work, "reader_ms_per_second"), (self._received, "reader_bytes_per_second")):
            if bucket is not None and not bucket.in_credit():
                self._metrics.limits_hit[limit] += 1
                return bucket.seconds_to_credit()
        return 0.0

    def _handle(self, header: FixedHeader, body: bytes) -> Awaitable[None] | None:
        """Handles one checked packet; an awaitable when part of it must wait (an acknowledgement)."""
        kind = header.packet_type
        if kind == codec.PUBLISH:
            return self._publish(codec.decode_publish(header.flags, body))
        if kind in (codec.PUBACK, codec.PUBREC, codec.PUBCOMP):
            # Acknowledgements of messages we never sent (or no longer wait for) are counted and dropped.
            if not self.flows.acknowledge(kind, codec.decode_packet_id(body)):
                self.stray_acks += 1
        elif kind == codec.PUBREL:
            packet_id = codec.decode_packet_id(body)
            self.session.qos2_awaiting_pubrel.discard(packet_id)
            self.write(codec.encode_ack(codec.PUBCOMP, packet_id))
        elif kind == codec.SUBSCRIBE:
            packet_id, filters = codec.decode_subscribe(body)
            codes = [self._handler.subscribe(self.session, f, qos) for f, qos in filters]
            self.write(codec.encode_suback(packet_id, codes))
            # retained messages after the SUBACK [MQTT-3.3.1-6]
            self._handler.subscribed(
                self.session, [(f, c) for (f, _), c in zip(filters, codes, strict=True) if c < 0x80]
            )
        elif kind == codec.UNSUBSCRIBE:
            packet_id, topic_filters = codec.decode_unsubscribe(body)
            for topic_filter in topic_filters:
                self._handler.unsubscribe(self.session, topic_filter)
            self.write(codec.encode_ack(codec.UNSUBACK, packet_id))
        elif kind == codec.PINGREQ:
            self.write(codec.PINGRESP_BYTES)
        return None

    def _publish(self, publish: Publish) -> Awaitable[None] | None:
        """Incoming QoS 0, 1 and 2. QoS 2 uses method B of [MQTT-4.3.3]: the message goes on at once and
        only its packet id is kept until PUBREL, so unreleased QoS 2 messages hold no payload and at
        most `max_qos2_awaiting_pubrel` ids; a duplicate PUBLISH of a kept id is not delivered again."""
        self._metrics.messages_in += 1
        if publish.qos == 2:
            awaiting = self.session.qos2_awaiting_pubrel
            if publish.packet_id in awaiting:
                original = self.session.qos2_processing.get(publish.packet_id)
                if original is not None:  # still being committed: PUBREC once it is, not before
                    return self._acknowledge_when(original, publish)
                self.write(codec.encode_ack(codec.PUBREC, publish.packet_id))
                return None
            if len(awaiting) >= self._max_qos2:
                self.close(CloseReason.PROTOCOL_ERROR, f"more than {self._max_qos2} QoS 2 messages awaiting PUBREL")
                return None
            awaiting.add(publish.packet_id)
        processed = self._handler.received(self, publish)
        if publish.qos == 2 and isinstance(processed, asyncio.Future) and not processed.done():
            processing, packet_id = self.session.qos2_processing, publish.packet_id
            processing[packet_id] = processed
            processed.add_done_callback(lambda _: processing.pop(packet_id, None))
        if publish.qos == 0:
            return processed
        if processed is None:
            self._acknowledge(publish)
            return None
        return self._acknowledge_when(processed, publish)

    async def _acknowledge_when(self, processed: Awaitable[None], publish: Publish) -> None:
        # shielded: this connection ending (a takeover) cancels the wait, not the processing itself,
        # which a duplicate from the next connection may still be waiting for
        await asyncio.shield(processed)
        self._acknowledge(publish)

    def _acknowledge(self, publish: Publish) -> None:
        with contextlib.suppress(ConnectionError):
            self.write(codec.encode_ack(codec.PUBACK if publish.qos == 1 else codec.PUBREC, publish.packet_id))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Reads a finished packet task's outcome, so a failure is logged once instead of lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, ConnectionError):
        log.warning("handling a packet failed: %r", exc)
