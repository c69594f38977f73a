"""GatewayBroker: the gateway's MQTT 3.1.1 broker, one connection from accept to its recorded end.

Our own session layer (this package) on amqtt's plugin API (amqtt_api.py). What differs from the
stock amqtt 0.12.1 Broker (docs/broker-hardening.md), each with a regression test:
1. Retained messages are replayed only for the new subscription, through the RECEIVE ACL
   (stock: every filter anyone subscribed to, no ACL).
2. Authentication runs on the incoming connection alone, before any existing session is touched
   (stock: a failed CONNECT with a victim's client id wiped the victim's session).
3. A second CONNECT with the same client id takes the session over: the first connection is
   closed and its end recorded before the new one is bound (stock: left open and deaf).
4. A resumed persistent session takes address, TLS object, credentials and identity from the new
   connection, after authenticating it (stock: reused the previous connection's TLS identity).
5. A silent socket is closed after `connect_timeout`; sockets over `max_connections` are closed
   at once (stock: no timeout, and queued instead of refused). Keep-alive is enforced.
6. An MQTT 5 (or 3.1) CONNECT gets CONNACK 0x01 at once (stock: the client hangs).
Routing goes through a subscription index (router.py): a publish costs O(topic levels), not
O(every subscription on the node).

The rooms: listener.py (sockets, admission, TLS), connect_packet.py (the CONNECT), table.py (the
session table and caps), connection.py and partial.py (one connection's packets), qos.py (outgoing
QoS flows), inbound.py (what a PUBLISH does), router.py / delivery.py / retained.py (where messages
go), presence.py (what the registry and the audit log learn of a connection), local_reach.py (how the
services reach sessions: gateway/services/reach.py), amqtt_api.py (the seam to amqtt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..auth.acl import TopicAccessPlugin
from ..auth.identity import RETRY_LATER_ATTR, DeviceIdentity, identity_of, owner_of, session_key
from ..auth.outcome import Refusal
from ..node.context import GatewayServices
from . import codec
from .admission import SocketAdmission, SocketTicket
from .amqtt_api import Action, BaseAuthPlugin, BaseContext, BrokerEvents, PluginManager, as_plugin_session
from .connect_packet import ConnectRejected, read_connect_packet
from .connection import CloseReason, Connection
from .delivery import Delivery
from .inbound import Inbound
from .keyed_lock import KeyedLock
from .listener import Listeners, ListenerSpec
from .partial import PartialPackets
from .presence import Presence
from .router import Router
from .session import ClientSession
from .table import SessionTable

log = logging.getLogger(__name__)

NOT_AUTHORIZED, SERVER_UNAVAILABLE = 0x05, 0x03
SLOW_QUEUE = "its queue filled up with QoS 1/2 messages"


class GatewayContext(BaseContext):
    """What our plugins are handed: amqtt's context, plus the gateway's services."""

    def __init__(self, services: GatewayServices, plugins: dict[str, Any]) -> None:
        super().__init__()
        self.services = services
        self.config = {"plugins": plugins}


class GatewayBroker:
    def __init__(self, services: GatewayServices, plugins: dict[str, Any]) -> None:
        self.services = services
        settings = services.settings
        self.plugins_manager: PluginManager[GatewayContext] = PluginManager(
            "gateway.broker.plugins", GatewayContext(services, plugins)
        )
        self._auth = [p for p in self.plugins_manager.plugins if isinstance(p, BaseAuthPlugin)]
        acl = [p for p in self.plugins_manager.plugins if isinstance(p, TopicAccessPlugin)]
        if len(acl) != 1:
            raise ValueError("GatewayBroker needs exactly one TopicAccessPlugin")
        self._acl = acl[0]
        self.router = Router(settings, services.metrics, self.allowed)
        self.table = SessionTable(settings, services.metrics, self.router)
        self.inbound = Inbound(services, self.router, self.allowed)
        admission = SocketAdmission(settings.max_connections, settings.max_pending_connects_per_address)
        self.partial_packets = partial = PartialPackets.of(settings, services.metrics)
        self.presence = Presence(services)
        self.listeners = Listeners(admission, settings.connect_timeout, self._serve, self.presence.refused, partial)
        self._owner_locks = KeyedLock()  # CONNECTs of one device (or service account), one at a time
        self._background: list[asyncio.Task[None]] = []  # session expiry, packet deadlines

    async def start(self, listeners: list[ListenerSpec]) -> None:
        await self.plugins_manager.fire_event(BrokerEvents.PRE_START, wait=True)
        await self.listeners.start(listeners)
        self._background = [asyncio.create_task(self.table.expire()), asyncio.create_task(self.partial_packets.sweep())]
        await self.plugins_manager.fire_event(BrokerEvents.POST_START, wait=True)

    async def shutdown(self) -> None:
        await self.plugins_manager.fire_event(BrokerEvents.PRE_SHUTDOWN, wait=True)
        self.listeners.close()
        # 10,000 sessions ending are one UPDATE, not 10,000 writes queued behind one another
        self.presence.shutting_down = True
        await self.close_sessions(lambda _: True, reason=CloseReason.SHUTDOWN)
        node = self.services.settings.node_id
        await self.services.registry.connections.recover_node(node, reason=CloseReason.SHUTDOWN)
        pending = self.inbound.request_tasks | self.listeners.tasks
        if pending:  # requests already read are answered (and written) before the registry closes
            await asyncio.wait(pending, timeout=5.0)
        for task in self._background:
            task.cancel()
        await self.plugins_manager.fire_event(BrokerEvents.POST_SHUTDOWN, wait=True)
        await self.plugins_manager.close()

    # -- what the rest of the gateway reads --------------------------------------------------------------

    def bound_port(self, listener_name: str) -> int:
        return self.listeners.bound_port(listener_name)

    @property
    def open_sockets(self) -> int:
        """Sockets counted against `max_connections` right now (TLS ones from before the handshake)."""
        return self.listeners.admission.open_sockets

    @property
    def sessions(self) -> dict[str, ClientSession]:
        return self.table.sessions

    def epmp_pending(self, owner: str) -> int:
        """10/EPMP requests of a device (`<tenant>/<device>`) waiting to be answered."""
        return self.inbound.pending_requests(owner)

    async def close_sessions(
        self, match: Callable[[DeviceIdentity], bool], *, reason: str, detail: str | None = None
    ) -> int:
        closed = await self.table.close_matching(match, reason=reason, detail=detail)
        self.services.metrics.sessions_kicked += closed
        if reason == CloseReason.KICKED:
            # A revoked or deleted identity's retained messages go too: a token given again later must
            # not inherit what its previous holder left behind.
            self.router.forget_retained(match)
        return closed

    # -- one connection, start to end -----------------------------------------------------------------------

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: SocketTicket, deadline: float
    ) -> None:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout_at(deadline):
                connect = await read_connect_packet(reader)
        except TimeoutError:
            self.presence.refused("connect_timeout", peer)
            return
        except ConnectRejected as exc:
            self.presence.refused(exc.reason, peer)
            if exc.return_code is not None:
                await _send_connack(writer, exc.return_code)
            return
        incoming = ClientSession.of(connect, peer, writer.get_extra_info("ssl_object"))
        if not await self._authenticate(incoming):
            retry = incoming.attributes.get(RETRY_LATER_ATTR, False)
            await _send_connack(writer, SERVER_UNAVAILABLE if retry else NOT_AUTHORIZED)
            return
        identity = identity_of(incoming)
        assert identity is not None
        key = session_key(identity, connect.client_id)
        await self._run(key, identity, incoming, reader, writer, ticket)

    async def _authenticate(self, session: ClientSession) -> bool:
        """amqtt's rule: refused if any auth plugin says False, or none says anything."""
        results = [await plugin.authenticate(session=as_plugin_session(session)) for plugin in self._auth]
        answers = [r for r in results if r is not None]
        return bool(answers) and all(answers) and identity_of(session) is not None

    async def _run(
        self,
        key: str,
        identity: DeviceIdentity,
        incoming: ClientSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ticket: SocketTicket,
    ) -> None:
        counted = False  # in the tenant's connected sessions (until the session is over)
        tenants = self.table.tenant_connected
        try:
            async with self._owner_locks.hold(owner_of(key)):
                if self.listeners.closing:  # shutdown has closed (or is closing) every session
                    self.presence.refused("shutting_down", writer.get_extra_info("peername"), identity=identity)
                    await _send_connack(writer, SERVER_UNAVAILABLE)
                    return
                await self.table.end_connection(key, CloseReason.TAKEN_OVER)
                limit = await self.table.make_room(key, identity)
                if limit is not None:
                    self.presence.refused(limit, writer.get_extra_info("peername"), identity=identity)
                    await _send_connack(writer, SERVER_UNAVAILABLE)
                    return
                if not identity.is_service:
                    tenants.add(identity.tenant_id)
                    counted = True
                session = self.table.adopt(key, incoming)
                delivery = self.router.delivery(key, session, on_slow=lambda: self.table.close_slow(key, SLOW_QUEUE))
                connection = Connection(
                    reader,
                    writer,
                    session,
                    delivery.flows,
                    self.inbound,
                    self.services,
                    self.partial_packets,
                    self.services.validation.packet_work(identity),
                    self.services.validation.packet_bytes(identity),
                )
                self.table.bind(session, connection)
                # Re-validated inside the registry transaction: a revocation that committed while we
                # authenticated refuses here; one that commits later finds this session to close.
                recorded = await self.presence.record_connect(session, identity, connection.connected_at)
            if recorded is not True:
                # False: revoked meanwhile (CONNACK 5, the session goes). None: the registry failed, which
                # says nothing about the credential (CONNACK 3, a persistent session and its queue stay).
                reason = Refusal.SESSION_REVOKED if recorded is False else Refusal.REGISTRY_UNAVAILABLE
                self.presence.refused(reason.value, writer.get_extra_info("peername"), identity=identity)
                self.table.unbind(session, connection, discard=recorded is False or session.clean_session)
                await _send_connack(writer, NOT_AUTHORIZED if recorded is False else SERVER_UNAVAILABLE)
                return
            try:
                await self._connected(session, connection, delivery, ticket)
            finally:
                delivery.detach_from(connection)
                if counted:  # over before its disconnect is written to the registry
                    tenants.remove(identity.tenant_id)
                    counted = False
                await self._finish(session, identity, connection)
        finally:
            if counted:
                tenants.remove(identity.tenant_id)

    async def _connected(
        self, session: ClientSession, connection: Connection, delivery: Delivery, ticket: SocketTicket
    ) -> None:
        self.presence.connected(session)
        with contextlib.suppress(ConnectionError):  # gone already: the reader sees EOF and ends
            connection.write(codec.encode_connack(session.resumed, 0))
            connection.connack_sent = True
        # Pending (per address) until here, not until its CONNECT was read: CONNECTs queued behind one
        # device's lock and session cap must not hold every socket slot of the node.
        self.listeners.admission.connect_read(ticket)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=session.client_id, client_session=session
        )
        # What a persistent session queued while offline goes first. Retained messages are sent when a
        # subscription is made [MQTT-3.3.1-6], not again on every resume.
        delivery.attach(
            connection, lambda: connection.close(CloseReason.SLOW_CONSUMER, "no acknowledgement within 5 s")
        )
        if session.resumed:
            self.inbound.resumed(session)
        await connection.run()

    async def _finish(self, session: ClientSession, identity: DeviceIdentity, connection: Connection) -> None:
        """Runs however the connection ended: will, unbind, record why."""
        connection.writer.transport.abort()
        reason = connection.close_reason or CloseReason.SOCKET_ERROR
        # [MQTT-3.1.2-8]; not after DISCONNECT [MQTT-3.1.2-10], nor for a session closed by a revocation
        if not connection.disconnect_received and reason != CloseReason.KICKED:
            await self.inbound.publish_will(session)
        self.table.unbind(session, connection, discard=session.clean_session or connection.discard_session)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_DISCONNECTED, client_id=session.client_id, client_session=session
        )
        await self.presence.disconnected(session, identity, reason, connection.close_detail, connection.connected_at)

    def allowed(self, session: Any, topic: str, action: Action) -> bool:
        """The topic ACL, counting what it denies."""
        allowed = self._acl.allowed(session, topic, action)
        if not allowed:
            if action == Action.PUBLISH:
                self.services.metrics.publishes_denied += 1
            elif action == Action.SUBSCRIBE:
                self.services.metrics.subscriptions_denied += 1
        return allowed


async def _send_connack(writer: asyncio.StreamWriter, return_code: int) -> None:
    with contextlib.suppress(Exception):
        writer.write(codec.encode_connack(False, return_code))
        async with asyncio.timeout(2):
            await writer.drain()
