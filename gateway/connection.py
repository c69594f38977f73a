"""One MQTT connection's transport and protocol handler, with the close reasons amqtt does not keep."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from amqtt.adapters import StreamWriterAdapter
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
    """Enforces keep-alive (amqtt 0.12.1's broker ignores read timeouts) and remembers why it closed."""

    close_reason: str | None = None
    close_detail: str | None = None
    discard_session: bool = False

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
