"""Who may hold a socket: the node-wide cap and a cap per source address on sockets that have not
finished CONNECT. Both are counted from the moment a socket is accepted, before any TLS handshake,
so neither silent sockets nor slow handshakes can take every slot.

The per-tenant count of connected device sessions is here too (TenantConnections); the per-device
cap needs the session table and lives in gateway/mqtt/table.py.
"""

from __future__ import annotations

import asyncio
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
    """One admitted socket. `pending` until it got CONNACK 0 (or it failed)."""

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


class TenantConnections:
    """Connected device sessions per tenant, for the tenant's cap. A CONNECT at the cap may wait a
    moment for one to end (one-shot clients in a row overlap at the gateway), `max_waiting` of a
    tenant at a time."""

    def __init__(self, max_waiting: int) -> None:
        self._connected: Counter[str] = Counter()
        self._waiting: Counter[str] = Counter()
        self._max_waiting = max_waiting
        self._released = asyncio.Event()

    def __getitem__(self, tenant_id: str) -> int:
        return self._connected[tenant_id]

    def counts(self) -> dict[str, int]:
        return dict(self._connected)

    def add(self, tenant_id: str) -> None:
        self._connected[tenant_id] += 1

    def remove(self, tenant_id: str) -> None:
        self._connected[tenant_id] -= 1
        if self._connected[tenant_id] <= 0:
            del self._connected[tenant_id]
        released, self._released = self._released, asyncio.Event()
        released.set()

    async def below(self, tenant_id: str, cap: int, grace: float) -> bool:
        """True once the tenant holds fewer than `cap` sessions; False if it still holds `cap` after
        `grace`, or at once when `max_waiting` of its CONNECTs wait already."""
        if self._connected[tenant_id] < cap:
            return True
        if self._waiting[tenant_id] >= self._max_waiting:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._waiting[tenant_id] += 1
        try:
            while self._connected[tenant_id] >= cap:
                released = self._released
                try:
                    async with asyncio.timeout_at(deadline):
                        await released.wait()
                except TimeoutError:
                    return self._connected[tenant_id] < cap
            return True
        finally:
            self._waiting[tenant_id] -= 1
            if self._waiting[tenant_id] <= 0:
                del self._waiting[tenant_id]
