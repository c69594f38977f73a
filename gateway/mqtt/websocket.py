"""MQTT over WebSocket (MQTT 3.1.1 section 6): the HTTP upgrade on a socket the listener accepted,
admitted and (for `wss`) wrapped in TLS, then a byte stream the session layer cannot tell from TCP.

websockets' sans-I/O protocol parses and frames; we own the socket, so admission, the one
`connect_timeout` deadline, the TLS context of each handshake and the peer certificate (X.509 device
authentication) are exactly those of the TCP listeners. MQTT packets may be split over binary
messages or packed several into one [MQTT-6.0.0-2]: their bytes go into an asyncio.StreamReader.
Anything else, a text frame first [MQTT-6.0.0-1], ends the connection as a protocol error.

Memory stays bounded: the upgrade request is at most MAX_REQUEST_BYTES, a message at most
`max_message_bytes` (refused from its header, before its payload is read), and the socket is not
read while the session layer has more than 2 x STREAM_LIMIT bytes unread, nor while what we wrote
(pongs included) waits in the socket's buffer. The bytes of a frame not yet whole count against the
node's `max_partial_packet_bytes`, and the frame must be whole `packet_timeout` after its first
byte, as an MQTT packet must (partial.py): before CONNECT too, and whatever the keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import PayloadTooBig
from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, CloseCode, Frame
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .codec import StreamViolation
from .connect_packet import MAX_CONNECT_BYTES
from .partial import PacketTimeout, PartialFrame, PartialPackets
from .websocket_upgrade import READ_CHUNK, WebSocketRefused, send_pending, upgrade

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("mqtt")  # [MQTT-6.0.0-3]; "mqttv3.1" is MQTT 3.1, refused anyway
STREAM_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    path: str
    """The one request path served ("/mqtt"); the query string is ignored."""
    max_message_bytes: int


def message_limit(max_packet_bytes: int) -> int:
    """The largest message: one whole packet of the largest size allowed, with its fixed header."""
    return max(max_packet_bytes, MAX_CONNECT_BYTES) + 5


class WebSocketConnection:
    """MQTT's reader and writer over one upgraded socket, until `close()`."""

    def __init__(self, stream: _MqttStream, early: list[Frame]) -> None:
        self.reader = stream.mqtt_reader
        self.writer: asyncio.StreamWriter = stream.mqtt_writer
        self._stream = stream
        self._pump = asyncio.create_task(stream.pump(early))

    def close(self) -> None:
        self._pump.cancel()
        self._stream.transport.abort()


async def accept_websocket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: WebSocketOptions, partial: PartialPackets
) -> WebSocketConnection:
    """The upgrade, under the caller's deadline. Raises WebSocketRefused."""
    ws = ServerProtocol(subprotocols=[SUBPROTOCOL], max_size=options.max_message_bytes)
    try:
        early = await upgrade(ws, reader, writer, options.path)
    except (ConnectionError, OSError) as exc:  # OSError: a reset, or a bad TLS record
        raise WebSocketRefused("websocket_handshake_aborted", type(exc).__name__) from None
    return WebSocketConnection(_MqttStream(ws, reader, writer, partial), early)


class _MqttStream:
    """The pump from the socket's WebSocket frames to MQTT's reader, and MQTT's writes into frames."""

    def __init__(
        self, ws: ServerProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, partial: PartialPackets
    ) -> None:
        self._ws = ws
        self._socket_reader = reader
        self._socket_writer = writer
        self._in_binary_message = False
        self._ended = False
        loop = asyncio.get_running_loop()
        self.mqtt_reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        self._frame = PartialFrame(lambda: len(ws.reader.buffer), partial, self.mqtt_reader)  # parsed once whole
        self._protocol = asyncio.StreamReaderProtocol(self.mqtt_reader)
        self.transport = _WebSocketTransport(ws, writer)
        self._protocol.connection_made(self.transport)
        self.mqtt_writer = _Writer(self.transport, self._protocol, self.mqtt_reader, loop, writer)

    async def pump(self, early: list[Frame]) -> None:
        try:
            self._deliver(early)
            if (full := self._frame.count()) is not None:  # a frame begun right behind the upgrade request
                self._fail(CloseCode.TRY_AGAIN_LATER, full)
            send_pending(self._ws, self._socket_writer)
            while not self._ended:
                try:
                    if self._frame.deadline is None:  # no frame begun: no timer to pay for
                        data = await self._next_data()
                    else:
                        async with asyncio.timeout_at(self._frame.deadline):
                            data = await self._next_data()
                except TimeoutError:
                    self._fail(CloseCode.POLICY_VIOLATION, PacketTimeout(self._frame.partial.timeout))
                    break
                if data:
                    self._ws.receive_data(data)
                else:
                    self._ws.receive_eof()
                self._deliver(self._ws.events_received())
                if (full := self._frame.count()) is not None:
                    self._fail(CloseCode.TRY_AGAIN_LATER, full)
                send_pending(self._ws, self._socket_writer)
                if not data:
                    self._end(None)
        except (ConnectionError, OSError) as exc:
            self._end(ConnectionResetError(str(exc)))
        except Exception:
            log.exception("WebSocket stream failed")  # a bug of ours: the connection ends, the gateway goes on
            self._end(ConnectionResetError("internal error"))
        finally:
            self._frame.release()
            self._end(None)

    async def _next_data(self) -> bytes:
        await self.transport.reading.wait()  # the session layer has read enough of what we gave it
        await self._socket_writer.drain()  # pongs a client never reads must not pile up here
        return await self._socket_reader.read(READ_CHUNK)

    def _fail(self, code: CloseCode, violation: StreamViolation) -> None:
        """A close frame with `code` for the client; MQTT's reader sees the violation."""
        self._ws.fail(code)
        send_pending(self._ws, self._socket_writer)
        self._end(violation)

    def _deliver(self, frames: Iterable[object]) -> None:
        for frame in frames:
            if self._ended or not isinstance(frame, Frame):
                return
            if frame.opcode is OP_BINARY or (frame.opcode is OP_CONT and self._in_binary_message):
                self._in_binary_message = not frame.fin
                self._protocol.data_received(bytes(frame.data))
            elif frame.opcode is OP_TEXT:
                self._ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                self._end(StreamViolation("websocket_text_frame", "a WebSocket text frame (MQTT needs binary)"))
            elif frame.opcode is OP_CLOSE:
                self._end(None)  # like a TCP FIN: without DISCONNECT first, the will is published
        failure = self._ws.parser_exc
        if failure is not None and not isinstance(failure, EOFError):
            if isinstance(failure, PayloadTooBig):
                self._end(StreamViolation("websocket_message_too_big", f"a WebSocket message: {failure}"))
            else:
                self._end(StreamViolation("websocket_protocol_error", f"WebSocket: {failure}"))

    def _end(self, exc: Exception | None) -> None:
        """MQTT's reader sees the end: EOF, or the violation it raises."""
        if self._ended:
            return
        self._ended = True
        self._protocol.connection_lost(exc)


class _WebSocketTransport(asyncio.Transport):
    """What MQTT writes becomes one binary message per write; facts about the socket (peer address, TLS
    object) are the socket's."""

    def __init__(self, ws: ServerProtocol, socket_writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self._ws = ws
        self._socket = socket_writer
        self.reading = asyncio.Event()
        self.reading.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._socket.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.is_closing():
            return
        self._ws.send_binary(bytes(data))
        send_pending(self._ws, self._socket)

    def is_closing(self) -> bool:
        return self._socket.transport.is_closing() or self._ws.state is not OPEN

    def get_write_buffer_size(self) -> int:
        return self._socket.transport.get_write_buffer_size()

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        """A close frame, if the socket will take it at once, then the socket goes (as a TCP one does)."""
        if self._ws.state is OPEN and not self._socket.transport.is_closing():
            self._ws.send_close(CloseCode.NORMAL_CLOSURE)
            send_pending(self._ws, self._socket)
        self._socket.transport.abort()

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_reading(self) -> bool:
        return self.reading.is_set()

    def can_write_eof(self) -> bool:
        return False


class _Writer(asyncio.StreamWriter):
    """Drains the socket's writer: the session layer's slow-consumer check waits on the real buffer."""

    def __init__(
        self,
        transport: _WebSocketTransport,
        protocol: asyncio.StreamReaderProtocol,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        socket_writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._socket_writer = socket_writer

    async def drain(self) -> None:
        await self._socket_writer.drain()
