"""Who may hold a socket: the node-wide cap and a cap per source address on sockets that have not
finished CONNECT. Both are counted from the moment a socket is accepted, before any TLS handshake,
so neither silent sockets nor slow handshakes can take every slot.

Per-device and per-tenant session caps need the identity and live in the session table
(gateway/broker.py); this module only counts sockets.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass

# A dead peer of a keep-alive 0 session sends nothing and is never timed out by MQTT: TCP keep-alive
# probes find it (60 s idle, then 6 probes 10 s apart).
TCP_KEEPALIVE_IDLE = 60
TCP_KEEPALIVE_INTERVAL = 10
TCP_KEEPALIVE_PROBES = 6


@dataclass(slots=True)
class SocketTicket:
    """One admitted socket. `pending` until its CONNECT has been read (or it failed)."""

    address: str
    pending: bool = True


class SocketAdmission:
    def __init__(self, max_connections: int, max_pending_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_pending_per_address = max_pending_per_address
        self.open_sockets = 0
        self._pending: Counter[str] = Counter()

    def admit(self, address: str) -> SocketTicket | str:
        """A ticket, or the name of the limit that refuses the socket."""
        if self.open_sockets >= self.max_connections:
            return "max_connections"
        if self._pending[address] >= self.max_pending_per_address:
            return "max_pending_connects_per_address"
        self.open_sockets += 1
        self._pending[address] += 1
        return SocketTicket(address)

    def connect_read(self, ticket: SocketTicket) -> None:
        if ticket.pending:
            ticket.pending = False
            self._forget_pending(ticket.address)

    def release(self, ticket: SocketTicket) -> None:
        self.connect_read(ticket)
        self.open_sockets -= 1

    def _forget_pending(self, address: str) -> None:
        self._pending[address] -= 1
        if self._pending[address] <= 0:
            del self._pending[address]


def enable_tcp_keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", TCP_KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", TCP_KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", TCP_KEEPALIVE_PROBES),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
