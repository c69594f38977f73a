"""The HTTP upgrade of a WebSocket listener's socket (websocket.py), with websockets' sans-I/O protocol:
a bounded request (MAX_REQUEST_BYTES), one request path, the `mqtt` subprotocol, and an HTTP error
for anything else.
"""

from __future__ import annotations

import asyncio
import email.utils
import http

from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF
from websockets.server import ServerProtocol

MAX_REQUEST_BYTES = 16_384
"""The HTTP upgrade request line and headers together; browsers send under 2 KiB."""
READ_CHUNK = 65_536


class WebSocketRefused(Exception):
    """The upgrade failed; the client got an HTTP error (or nothing, if it had sent no request)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


async def upgrade(
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
    send_pending(ws, writer)
    if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
        raise WebSocketRefused("websocket_bad_request", f"{response.status_code}: {detail}")
    return [f for f in frames if isinstance(f, Frame)]


def send_pending(ws: ServerProtocol, writer: asyncio.StreamWriter) -> None:
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
