"""Listening sockets: every accepted socket is admitted (and counted) before anything else, then gets
its TLS handshake (on a TLS listener), its WebSocket upgrade (on a `ws`/`wss` listener, websocket.py)
and its CONNECT read, all within one `connect_timeout`.

We run the TLS handshake ourselves: under the deadline, and a refused certificate becomes a logged,
counted refusal instead of asyncio's silence.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .admission import SocketAdmission, SocketTicket, enable_tcp_keepalive
from .partial import PartialPackets
from .websocket import WebSocketOptions, accept_websocket
from .websocket_upgrade import WebSocketRefused

log = logging.getLogger(__name__)

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, SocketTicket, float], Awaitable[None]]
Refused = Callable[[str, "tuple[str, int] | None", "str | None"], None]


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str
    host: str
    port: int
    tls: Callable[[], ssl.SSLContext] | None = None
    """The server context for each handshake (a new one after every trust change), or plain TCP."""
    websocket: WebSocketOptions | None = None
    """MQTT over WebSocket on this port, or bare MQTT."""


class Listeners:
    def __init__(
        self,
        admission: SocketAdmission,
        connect_timeout: float,
        serve: Serve,
        refused: Refused,
        partial: PartialPackets,
    ) -> None:
        self.admission = admission
        self._partial = partial
        self._connect_timeout = connect_timeout
        self._serve = serve
        self._refused = refused
        self._running: dict[str, asyncio.Server] = {}
        self.closing = False
        self.tasks: set[asyncio.Task[Any]] = set()
        """One per accepted socket until it is closed: shutdown waits for them."""

    async def start(self, specs: list[ListenerSpec]) -> None:
        for spec in specs:
            self._running[spec.name] = await asyncio.start_server(
                lambda r, w, s=spec: self._accepted(r, w, s),  # type: ignore[misc]
                spec.host,
                spec.port,
                reuse_address=True,
            )

    def bound_port(self, name: str) -> int:
        return int(self._running[name].sockets[0].getsockname()[1])

    def close(self) -> None:
        """No new sockets from now on."""
        self.closing = True
        for server in self._running.values():
            server.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, spec: ListenerSpec) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        peer = writer.get_extra_info("peername")
        ticket = "shutting_down" if self.closing else self.admission.admit(str(peer[0]) if peer else "")
        if isinstance(ticket, str):
            self._refused(ticket, peer, None)
            writer.transport.abort()
            return
        # one connect_timeout for the TLS handshake and the CONNECT together (docs/security.md)
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        try:
            enable_tcp_keepalive(writer.get_extra_info("socket"))
            if spec.tls is not None and not await self._tls_handshake(writer, spec.tls(), deadline):
                return
            if spec.websocket is None:
                await self._serve(reader, writer, ticket, deadline)
            else:
                await self._serve_websocket(reader, writer, ticket, deadline, spec.websocket)
        except Exception:
            log.exception("connection handling failed")
        finally:
            self.admission.release(ticket)
            writer.transport.abort()

    async def _serve_websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ticket: SocketTicket,
        deadline: float,
        options: WebSocketOptions,
    ) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                upgraded = await accept_websocket(reader, writer, options, self._partial)
        except TimeoutError:
            self._refused("websocket_handshake_timeout", writer.get_extra_info("peername"), None)
            return
        except WebSocketRefused as exc:
            self._refused(exc.reason, writer.get_extra_info("peername"), exc.detail)
            return
        try:
            await self._serve(upgraded.reader, upgraded.writer, ticket, deadline)
        finally:
            upgraded.close()

    async def _tls_handshake(self, writer: asyncio.StreamWriter, context: ssl.SSLContext, deadline: float) -> bool:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context)
            return True
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            reason, detail = tls_refusal(exc)
            self._refused(reason, peer, detail)
            writer.transport.abort()
            return False


_VERIFY_REASONS = {
    "certificate has expired": "tls_certificate_expired",
    "certificate is not yet valid": "tls_certificate_not_yet_valid",
    "unable to get local issuer certificate": "tls_unknown_ca",
    "self-signed certificate": "tls_unknown_ca",
    "self signed certificate": "tls_unknown_ca",
    "unable to verify the first certificate": "tls_unknown_ca",
}


def tls_refusal(exc: BaseException) -> tuple[str, str]:
    """A reason code for a failed TLS handshake, from OpenSSL's own words."""
    if isinstance(exc, TimeoutError):
        return "tls_handshake_timeout", "no TLS handshake within connect_timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = str(exc.verify_message or "")
        return _VERIFY_REASONS.get(message, "tls_certificate_refused"), message
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake_failed", str(exc.reason or exc)
    return "tls_handshake_aborted", type(exc).__name__
