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
(pongs included) waits in the socket's buffer.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import PayloadTooBig
from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import OPEN, SEND_EOF
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .codec import StreamViolation
from .connect_packet import MAX_CONNECT_BYTES

log = logging.getLogger(__name__)

SUBPROTOCOL = Subprotocol("mqtt")  # [MQTT-6.0.0-3]; "mqttv3.1" is MQTT 3.1, refused anyway
MAX_REQUEST_BYTES = 16_384
"""The HTTP upgrade request line and headers together; browsers send under 2 KiB."""
READ_CHUNK = 65_536
STREAM_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    path: str
    """The one request path served ("/mqtt"); the query string is ignored."""
    max_message_bytes: int


def message_limit(max_packet_bytes: int) -> int:
    """The largest message: one whole packet of the largest size allowed, with its fixed header."""
    return max(max_packet_bytes, MAX_CONNECT_BYTES) + 5


class WebSocketRefused(Exception):
    """The upgrade failed; the client got an HTTP error (or nothing, if it had sent no request)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: WebSocketOptions
) -> WebSocketConnection:
    """The upgrade, under the caller's deadline. Raises WebSocketRefused."""
    ws = ServerProtocol(subprotocols=[SUBPROTOCOL], max_size=options.max_message_bytes)
    try:
        early = await _upgrade(ws, reader, writer, options.path)
    except (ConnectionError, OSError) as exc:  # OSError: a reset, or a bad TLS record
        raise WebSocketRefused("websocket_handshake_aborted", type(exc).__name__) from None
    return WebSocketConnection(_MqttStream(ws, reader, writer), early)


async def _upgrade(
    ws: ServerProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> list[Frame]:
    """Answers the upgrade request; returns frames the client sent right behind it."""
    received = 0
    while True:
        data = await reader.read(READ_CHUNK)
        if not data:
            raise WebSocketRefused("websocket_handshake_aborted", "the socket closed before the upgrade request")
        received += len(data)
        ws.receive_data(data)
        events = ws.events_received()
        if events:
            break
        if ws.handshake_exc is not None:
            _answer(writer, http.HTTPStatus.BAD_REQUEST)
            raise WebSocketRefused("websocket_bad_request", _chain(ws.handshake_exc))
        if received > MAX_REQUEST_BYTES:
            _answer(writer, http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            raise WebSocketRefused("websocket_bad_request", f"upgrade request over {MAX_REQUEST_BYTES} bytes")
    request, frames = events[0], events[1:]
    assert isinstance(request, Request)
    if ws.parser_exc is not None:  # bytes behind the request that are no WebSocket frame
        _answer(writer, http.HTTPStatus.BAD_REQUEST)
        raise WebSocketRefused("websocket_bad_request", _chain(ws.parser_exc))
    if request.path.split("?", 1)[0] != path:
        response = ws.reject(http.HTTPStatus.NOT_FOUND, f"MQTT over WebSocket is served at {path}\n")
        detail = f"path {request.path[:100]!r}"
    else:
        response = ws.accept(request)
        detail = _chain(ws.handshake_exc) if ws.handshake_exc is not None else ""
    ws.send_response(response)
    _send(ws, writer)
    if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
        raise WebSocketRefused("websocket_bad_request", f"{response.status_code}: {detail}")
    return [f for f in frames if isinstance(f, Frame)]


class _MqttStream:
    """The pump from the socket's WebSocket frames to MQTT's reader, and MQTT's writes into frames."""

    def __init__(self, ws: ServerProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._ws = ws
        self._socket_reader = reader
        self._socket_writer = writer
        self._in_binary_message = False
        self._ended = False
        loop = asyncio.get_running_loop()
        self.mqtt_reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        self._protocol = asyncio.StreamReaderProtocol(self.mqtt_reader)
        self.transport = _WebSocketTransport(ws, writer)
        self._protocol.connection_made(self.transport)
        self.mqtt_writer = _Writer(self.transport, self._protocol, self.mqtt_reader, loop, writer)

    async def pump(self, early: list[Frame]) -> None:
        try:
            self._deliver(early)
            _send(self._ws, self._socket_writer)
            while not self._ended:
                await self.transport.reading.wait()  # the session layer has read enough of what we gave it
                await self._socket_writer.drain()  # pongs a client never reads must not pile up here
                data = await self._socket_reader.read(READ_CHUNK)
                if data:
                    self._ws.receive_data(data)
                else:
                    self._ws.receive_eof()
                self._deliver(self._ws.events_received())
                _send(self._ws, self._socket_writer)
                if not data:
                    self._end(None)
        except (ConnectionError, OSError) as exc:
            self._end(ConnectionResetError(str(exc)))
        except Exception:
            log.exception("WebSocket stream failed")  # a bug of ours: the connection ends, the gateway goes on
            self._end(ConnectionResetError("internal error"))
        finally:
            self._end(None)

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
        _send(self._ws, self._socket)

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
            _send(self._ws, self._socket)
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


def _send(ws: ServerProtocol, writer: asyncio.StreamWriter) -> None:
    """Writes what the protocol has to send; its end-of-stream closes the socket (a server closes first)."""
    for chunk in ws.data_to_send():
        if chunk == SEND_EOF:
            writer.transport.close()
        elif not writer.transport.is_closing():
            writer.transport.write(chunk)


def _answer(writer: asyncio.StreamWriter, status: http.HTTPStatus) -> None:
    """An HTTP error for a request websockets could not parse (it answers only those it could)."""
    body = f"{status.value} {status.phrase}\n".encode()
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", "text/plain; charset=utf-8"),
        ]
    )
    writer.transport.write(Response(status.value, status.phrase, headers, body).serialize())


def _chain(exc: BaseException) -> str:
    text = str(exc)
    while exc.__cause__ is not None:
        exc = exc.__cause__
        text += f"; {exc}"
    return text[:200]
