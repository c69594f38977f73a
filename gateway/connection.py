"""One MQTT connection's transport and protocol handler, with the close reasons amqtt does not keep."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any

from amqtt.adapters import BufferReader, StreamWriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt import packet_class
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
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

log = logging.getLogger(__name__)

WRITER_CLOSE_TIMEOUT = 5.0


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
    """A writer that can be aborted at once and whose close cannot hang on a peer that stops reading."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.stream = writer

    def abort(self) -> None:
        self.is_closed = True
        self.stream.transport.abort()

    async def close(self) -> None:
        try:
            async with asyncio.timeout(WRITER_CLOSE_TIMEOUT):
                await super().close()
        except (TimeoutError, ConnectionError, OSError):
            self.abort()


class GatewayProtocolHandler(BrokerProtocolHandler):
    """amqtt's handler with our reader loop: keep-alive enforced, packets bounded in size and read
    whole before parsing, any malformed packet closes the connection; remembers why it closed."""

    close_reason: str | None = None
    close_detail: str | None = None
    discard_session: bool = False
    max_packet_bytes: int = 1_048_576

    async def _reader_loop(self) -> None:
        """Replaces amqtt's: that one logs a malformed packet and reads on from the middle of it
        (the stream is then out of step), never enforces keep-alive, and reads any size."""
        assert self.session is not None and self.reader is not None and self._reader_ready is not None
        keep_alive = self.session.keep_alive or None  # already 1.5 x the client's value
        running: collections.deque[asyncio.Task[Any]] = collections.deque()
        self._reader_ready.set()
        try:
            while True:
                while running and running[0].done():
                    running.popleft()
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
                running.popleft().cancel()
            await self.handle_connection_closed()
            self._reader_stopped.set()
            await self.stop()

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
