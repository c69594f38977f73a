"""One MQTT connection's transport and protocol handler, with the close reasons amqtt does not keep."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler, Subscription, UnSubscription
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import IncomingApplicationMessage, Session

from .packet_checks import check_packet
from .settings import GatewaySettings

log = logging.getLogger(__name__)

WRITER_CLOSE_TIMEOUT = 5.0
# Packets read but not yet handled, per connection: beyond either bound the reader stops reading
# (TCP pushes back on the client) until the oldest is done.
MAX_UNFINISHED_PACKETS = 64
QOS2_IDS_ATTR = "gateway.qos2_awaiting_pubrel"


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


# What a client may send after CONNECT, and the handler method for it. Anything else (a second
# CONNECT, a CONNACK, a reserved type) is a protocol violation.
_CLIENT_PACKETS = {
    PUBLISH: "handle_publish",
    PUBACK: "handle_puback",
    PUBREC: "handle_pubrec",
    PUBREL: "handle_pubrel",
    PUBCOMP: "handle_pubcomp",
    SUBSCRIBE: "handle_subscribe",
    UNSUBSCRIBE: "handle_unsubscribe",
    PINGREQ: "handle_pingreq",
    DISCONNECT: "handle_disconnect",
}


class GatewayStreamWriter(StreamWriterAdapter):
    """A writer that can be aborted at once, whose close cannot hang on a peer that stops reading,
    and whose every write gives up after `stall_timeout` seconds of a peer that does not read."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.stream = writer
        self.stall_timeout: float | None = None
        self.on_stall: Callable[[], None] | None = None

    def abort(self) -> None:
        self.is_closed = True
        self.stream.transport.abort()

    async def drain(self) -> None:
        if self.is_closed:
            return
        try:
            async with asyncio.timeout(self.stall_timeout):
                await self.stream.drain()
        except TimeoutError:
            if self.on_stall is not None:
                self.on_stall()
            self.abort()
            raise ConnectionResetError("the peer stopped reading") from None

    async def close(self) -> None:
        try:
            async with asyncio.timeout(WRITER_CLOSE_TIMEOUT):
                await super().close()
        except (TimeoutError, ConnectionError, OSError):
            self.abort()


class ReceivedMessage(IncomingApplicationMessage):
    """A PUBLISH from the client. It is acknowledged (PUBACK, PUBREC) only when `processed` is
    done: routed, or its 10/EPMP write committed. So an acknowledged message is never lost."""

    def __init__(self, packet: PublishPacket) -> None:
        super().__init__(packet.packet_id, packet.topic_name, packet.qos, packet.data, packet.retain_flag)
        self.publish_packet = packet
        self.processed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(self) -> None:
        if not self.processed.done():
            self.processed.set_result(None)


class GatewayProtocolHandler(BrokerProtocolHandler):
    """amqtt's handler with our reader loop and incoming QoS flows: keep-alive enforced, packets
    bounded in size and number and read whole, checked against MQTT 3.1.1 before parsing (any
    violation closes the connection), acknowledged only once processed; remembers why it closed."""

    close_reason: str | None = None
    close_detail: str | None = None
    discard_session: bool = False
    max_packet_bytes: int = 1_048_576
    max_qos2_awaiting_pubrel: int = 32

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set when the reader loop has ended for good, however early: amqtt's disconnect waiter is
        # made only after its reader started, so a client that sent CONNECT and reset at once ended
        # the reader before the waiter existed, and the session waited forever (a ghost).
        self.reader_done = asyncio.Event()
        self.disconnect_packet: DisconnectPacket | None = None
        # amqtt's are unbounded and its handle_subscribe returns at once, so SUBSCRIBE/UNSUBSCRIBE
        # packets never counted against MAX_UNFINISHED_PACKETS: one waiting at most, the rest push back
        self._pending_subscriptions: asyncio.Queue[Subscription] = asyncio.Queue(maxsize=1)
        self._pending_unsubscriptions: asyncio.Queue[UnSubscription] = asyncio.Queue(maxsize=1)
        self.max_filters_per_packet = 1000

    def configure(self, settings: GatewaySettings) -> None:
        self.max_packet_bytes = settings.max_packet_bytes
        self.max_qos2_awaiting_pubrel = settings.max_qos2_awaiting_pubrel
        self._stall_timeout = settings.slow_consumer_timeout
        self.max_filters_per_packet = max(1000, settings.max_subscriptions_per_session)

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        super().attach(session, reader, writer)
        if isinstance(writer, GatewayStreamWriter):
            writer.stall_timeout = getattr(self, "_stall_timeout", None)
            writer.on_stall = lambda: self.close(CloseReason.SLOW_CONSUMER, "did not read what was sent to it")

    async def wait_disconnect(self) -> DisconnectPacket | None:
        await self.reader_done.wait()
        return self.disconnect_packet

    async def handle_disconnect(self, disconnect: DisconnectPacket | None) -> None:
        if disconnect is not None:
            self.disconnect_packet = disconnect

    async def _reader_loop(self) -> None:
        """Replaces amqtt's: that one logs a malformed packet and reads on from the middle of it
        (the stream is then out of step), never enforces keep-alive, and reads any size."""
        assert self.session is not None and self.reader is not None and self._reader_ready is not None
        keep_alive = self.session.keep_alive or None  # already 1.5 x the client's value
        running: collections.deque[asyncio.Task[Any]] = collections.deque()
        self._reader_ready.set()
        try:
            while True:
                while running and (running[0].done() or len(running) >= MAX_UNFINISHED_PACKETS):
                    await asyncio.wait({running[0]})  # back-pressure: read on once the oldest is done
                    _retrieve(running.popleft())
                try:
                    # one deadline per packet (asyncio.timeout: no task per read, unlike wait_for)
                    async with asyncio.timeout(keep_alive):
                        header = await MQTTFixedHeader.from_stream(self.reader)
                        if header is None:  # EOF
                            break
                        if header.remaining_length > self.max_packet_bytes:
                            detail = f"packet of {header.remaining_length} bytes over the limit"
                            self.close(CloseReason.PROTOCOL_ERROR, detail)
                            break
                        method = _CLIENT_PACKETS.get(header.packet_type)
                        if method is None:
                            self.close(CloseReason.PROTOCOL_ERROR, f"unexpected packet type {header.packet_type}")
                            break
                        body = await self.reader.read(header.remaining_length) if header.remaining_length else b""
                except TimeoutError:
                    self.handle_read_timeout()
                    break
                except MQTTError as exc:  # e.g. a remaining length of more than 4 bytes
                    self.close(CloseReason.PROTOCOL_ERROR, str(exc))
                    break
                if len(body) != header.remaining_length:
                    break  # EOF mid-packet: a socket error
                if (
                    violation := check_packet(header.packet_type, header.flags, body, self.max_filters_per_packet)
                ) is not None:
                    self.close(CloseReason.PROTOCOL_ERROR, violation)
                    break
                try:
                    packet = await packet_class(header).from_stream(BufferReader(body), fixed_header=header)
                except (MQTTError, AMQTTError, NoDataError, ValueError, UnicodeDecodeError, IndexError) as exc:
                    self.close(CloseReason.PROTOCOL_ERROR, f"malformed packet: {exc}")
                    break
                if header.packet_type == DISCONNECT:
                    # handled inline: the client closes right after it, and its earlier packets count
                    if running:
                        await asyncio.wait(running, timeout=WRITER_CLOSE_TIMEOUT)
                    self.note_client_disconnect()
                    await self.handle_disconnect(packet)
                    break
                running.append(asyncio.create_task(getattr(self, method)(packet)))
        except asyncio.CancelledError:
            pass
        except (asyncio.IncompleteReadError, ConnectionError, NoDataError):
            pass  # the peer went away mid-packet: a socket error
        except Exception:
            log.exception("reader loop failed")
            self.close(CloseReason.PROTOCOL_ERROR, "internal error")
        finally:
            # Packets already read are still handled (a PUBLISH right before the socket closed),
            # within a bound; only then is the connection reported closed.
            pending = [t for t in running if not t.done()]
            if pending and self.close_reason not in (CloseReason.TAKEN_OVER, CloseReason.KICKED):
                await asyncio.wait(pending, timeout=WRITER_CLOSE_TIMEOUT)
            while running:
                task = running.popleft()
                task.cancel()
                task.add_done_callback(_retrieve)
            self._reader_stopped.set()
            self.reader_done.set()
            await self.stop()

    # -- incoming PUBLISH flows ([MQTT-4.3]) ---------------------------------------------------------

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        """QoS 0, 1 and 2 from the client. QoS 2 uses method B of [MQTT-4.3.3]: the message goes on at
        once and only its packet id is kept until PUBREL, so unreleased QoS 2 messages hold no payload
        and at most `max_qos2_awaiting_pubrel` ids; a duplicate PUBLISH of a kept id is not delivered again."""
        assert self.session is not None
        qos, packet_id = publish_packet.qos, publish_packet.packet_id
        if qos == 2:
            awaiting: set[int] = self.session.attributes.setdefault(QOS2_IDS_ATTR, set())
            if packet_id in awaiting:
                await self._send_packet(PubrecPacket.build(packet_id))
                return
            if len(awaiting) >= self.max_qos2_awaiting_pubrel:
                limit = self.max_qos2_awaiting_pubrel
                self.close(CloseReason.PROTOCOL_ERROR, f"more than {limit} QoS 2 messages awaiting PUBREL")
                return
            awaiting.add(packet_id)
        message = ReceivedMessage(publish_packet)
        self.session.delivered_message_queue.put_nowait(message)
        await message.processed
        if qos == 1:
            await self._send_packet(PubackPacket.build(packet_id))
        elif qos == 2:
            await self._send_packet(PubrecPacket.build(packet_id))

    # Acknowledgements of messages we never sent (or no longer wait for): amqtt logs a WARNING for
    # each, so 40 kB of stray acks became 1.2 MB of log. They are counted and dropped.
    stray_acks: int = 0

    async def handle_puback(self, puback: PubackPacket) -> None:
        self._acknowledge(self._puback_waiters, puback.packet_id, puback)

    async def handle_pubrec(self, pubrec: PubrecPacket) -> None:
        self._acknowledge(self._pubrec_waiters, pubrec.packet_id, pubrec)

    async def handle_pubcomp(self, pubcomp: PubcompPacket) -> None:
        self._acknowledge(self._pubcomp_waiters, pubcomp.packet_id, pubcomp)

    def _acknowledge(self, waiters: dict[int, asyncio.Future[Any]], packet_id: int, packet: Any) -> None:
        waiter = waiters.get(packet_id)
        if waiter is None or waiter.done():
            self.stray_acks += 1
            return
        waiter.set_result(packet)

    async def handle_pubrel(self, pubrel: PubrelPacket) -> None:
        assert self.session is not None
        self.session.attributes.get(QOS2_IDS_ATTR, set()).discard(pubrel.packet_id)
        await self._send_packet(PubcompPacket.build(pubrel.packet_id))

    def close(self, reason: str, detail: str | None = None, *, discard_session: bool = False) -> None:
        """Ends the connection now; the first reason given is the one logged."""
        if self.close_reason is None:
            self.close_reason, self.close_detail = reason, detail
        self.discard_session = self.discard_session or discard_session
        if isinstance(self.writer, GatewayStreamWriter):
            with contextlib.suppress(Exception):
                self.writer.abort()

    def handle_read_timeout(self) -> None:
        # The reader waits 1.5 x keep-alive (set at CONNECT) for any packet: [MQTT-3.1.2-24].
        self.close(CloseReason.KEEPALIVE_TIMEOUT)

    def note_client_disconnect(self) -> None:
        if self.close_reason is None:
            self.close_reason = CloseReason.CLIENT_DISCONNECT


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Reads a finished packet task's outcome, so a failure is logged once instead of lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, (ConnectionError, AMQTTError, MQTTError)):
        log.warning("handling a packet failed: %r", exc)
