"""The session table: every session this node holds (connected, or persistent and kept), keyed
`<tenant>/<device>/<client id>` (so a client id chosen by one device can never take over, resume or
wipe another device's session), the live connection of each, and the caps per device and tenant.

A tenant's cap is its `maxConnections`, or else its share of the node's sockets
(`tenant_connections_share` x `max_connections`): a socket has no tenant until its CONNECT is
authenticated, so the share is enforced there, and what one tenant cannot take stays free for the
others and for sockets not yet authenticated. Over its cap a tenant's CONNECT gets CONNACK 3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..auth.identity import DeviceIdentity, identity_of, owner_key, owner_of
from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .admission import TenantConnections
from .connection import CloseReason, Connection
from .router import Router
from .session import ClientSession

TAKEOVER_WAIT = 5.0
SESSION_CAP_GRACE = 1.0  # seconds a CONNECT over its device's or tenant's cap waits for one to end
MAX_WAITING_AT_TENANT_CAP = 8
"""CONNECTs of one tenant at its cap that may wait the grace at once; more are refused at once, so a
fleet's reconnect loop cannot hold sockets (the headroom other tenants need) while it waits."""
EXPIRY_SWEEP_SECONDS = 1.0


@dataclass(slots=True)
class Live:
    connection: Connection
    task: asyncio.Task[Any]
    """The task serving the connection: done once the session is unbound and its end recorded."""


class SessionTable:
    def __init__(self, settings: GatewaySettings, metrics: Metrics, router: Router) -> None:
        self._settings = settings
        self._metrics = metrics
        self._router = router
        self.sessions: dict[str, ClientSession] = {}
        self.live: dict[str, Live] = {}
        self._owner_sessions: dict[str, set[str]] = {}  # owner -> its session keys, connected or kept
        self._offline_since: dict[str, float] = {}  # kept persistent sessions: since when (monotonic)
        self.tenant_connected = TenantConnections(MAX_WAITING_AT_TENANT_CAP)
        self._tenant_share = max(1, int(settings.max_connections * settings.tenant_connections_share))

    # -- binding a session to its connection ------------------------------------------------------------

    def adopt(self, key: str, incoming: ClientSession) -> ClientSession:
        """The session the CONNECT continues: the kept one for a persistent resume, else the new one."""
        existing = self.sessions.get(key)
        if incoming.clean_session or existing is None:
            if existing is not None:
                self.delete(key)
            incoming.key = key
            return incoming
        existing.resume_with(incoming)
        return existing

    def bind(self, session: ClientSession, connection: Connection) -> None:
        key = session.key
        self._offline_since.pop(key, None)
        self.sessions[key] = session
        identity = identity_of(session)
        if identity is not None:
            self._owner_sessions.setdefault(owner_key(identity), set()).add(key)
        task = asyncio.current_task()
        assert task is not None
        self.live[key] = Live(connection, task)
        session.connected = True

    def unbind(self, session: ClientSession, connection: Connection, *, discard: bool) -> None:
        key = session.key
        live = self.live.get(key)
        if live is not None and live.connection is connection:
            del self.live[key]
            session.connected = False
            self._offline_since[key] = time.monotonic()
            if discard:
                self.delete(key)

    def delete(self, key: str) -> None:
        """The session is gone: its subscriptions and queue with it."""
        self.sessions.pop(key, None)
        self._router.drop(key)
        self._offline_since.pop(key, None)
        owner = owner_of(key)
        keys = self._owner_sessions.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._owner_sessions[owner]

    def keys_of(self, owner: str) -> frozenset[str]:
        """The session keys of a device or account (`<tenant>/<device>`), connected or kept."""
        return frozenset(self._owner_sessions.get(owner, ()))

    # -- caps -----------------------------------------------------------------------------------------------

    async def make_room(self, key: str, identity: DeviceIdentity) -> str | None:
        """The per-device and per-tenant session caps; None when the session may be bound.

        At the device's cap, in this order: sessions already ending (DISCONNECT read, socket gone) are
        waited for; the oldest offline persistent session gives way; then the device's live sessions
        get `SESSION_CAP_GRACE` to end (short-lived clients in a row overlap: each CONNECT arrives
        before the previous client's DISCONNECT is read). Only then is the CONNECT refused."""
        own_cap = identity.tenant_max_connections
        cap = self._tenant_share if own_cap is None else own_cap
        tenant_limit = "tenant_connections_share" if own_cap is None else "tenant_max_connections"
        tenant_capped = not identity.is_service  # service accounts: bounded by max_sessions_per_device each
        # the tenant first, before evicting anything: a refused CONNECT changes nothing
        if tenant_capped and not await self.tenant_connected.below(identity.tenant_id, cap, SESSION_CAP_GRACE):
            return tenant_limit
        waited_ending = waited_live = False
        while True:
            others = self._owner_sessions.get(owner_key(identity), set()) - {key}
            if len(others) < self._settings.max_sessions_per_device:
                break
            live = [self.live[k] for k in others if k in self.live]
            ending = [entry.task for entry in live if entry.connection.ending]
            if ending and not waited_ending:
                await asyncio.wait(ending, timeout=TAKEOVER_WAIT)
                waited_ending = True
                continue
            offline = [k for k in others if k not in self.live and k in self.sessions]
            if offline:
                self._metrics.limits_hit["max_sessions_per_device"] += 1
                self.delete(min(offline, key=lambda k: self._offline_since.get(k, 0.0)))
                continue
            if live and not waited_live:
                tasks = [entry.task for entry in live]
                await asyncio.wait(tasks, timeout=SESSION_CAP_GRACE, return_when=asyncio.FIRST_COMPLETED)
                waited_live = True
                continue
            return "max_sessions_per_device"
        if tenant_capped and self.tenant_connected[identity.tenant_id] >= cap:
            return tenant_limit  # checked again: the waits above let others in
        return None

    # -- closing sessions (takeover, revocation, slow consumers, shutdown) ---------------------------------

    async def end_connection(self, key: str, reason: str) -> None:
        """Closes the connection holding `key` and waits until its end is recorded (a takeover)."""
        live = self.live.get(key)
        if live is None:
            return
        live.connection.close(reason)
        if live.task is not asyncio.current_task():
            await asyncio.wait({live.task}, timeout=TAKEOVER_WAIT)

    def close_slow(self, key: str, detail: str) -> None:
        live = self.live.get(key)
        if live is not None:
            live.connection.close(CloseReason.SLOW_CONSUMER, detail)

    async def close_matching(
        self, match: Callable[[DeviceIdentity], bool], *, reason: str, detail: str | None = None
    ) -> int:
        """Closes every live session whose identity matches, and forgets matching kept ones."""
        tasks = []
        for key, session in list(self.sessions.items()):
            identity = identity_of(session)
            if identity is None or not match(identity):
                continue
            live = self.live.get(key)
            if live is not None:
                live.connection.close(reason, detail, discard_session=True)
                tasks.append(live.task)
            else:
                self.delete(key)
        if tasks:
            await asyncio.wait(tasks, timeout=TAKEOVER_WAIT)
        return len(tasks)

    async def expire(self) -> None:
        """Forever: kept persistent sessions whose client has been away `session_expiry_seconds` go."""
        while True:
            await asyncio.sleep(EXPIRY_SWEEP_SECONDS)
            horizon = time.monotonic() - self._settings.session_expiry_seconds
            for key in [k for k, since in self._offline_since.items() if since < horizon and k not in self.live]:
                self.delete(key)
