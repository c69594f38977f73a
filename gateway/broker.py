"""GatewayBroker: amqtt's Broker with the connection flow rewritten so none of the stock defects remain.

What differs from amqtt 0.12.1 (../shared/notes/amqtt-0.12.md), each with a regression test:
1. Retained messages are replayed only for the new session's own subscriptions, through the
   RECEIVE ACL (stock: every filter anyone subscribed to, no ACL).
2. Authentication runs on the incoming connection alone, before any existing session is touched
   (stock: a failed CONNECT with a victim's client id wiped the victim's session).
3. A second CONNECT with the same client id takes the session over: the first connection is
   closed and its end recorded before the new one is bound (stock: left open and deaf).
4. A resumed persistent session takes address, TLS object, credentials and identity from the new
   connection, after authenticating it (stock: reused the previous connection's TLS identity).
5. A silent socket is closed after `connect_timeout`; sockets over `max_connections` are closed
   at once (stock: no timeout, and queued instead of refused). Keep-alive is enforced.
6. An MQTT 5 (or 3.1) CONNECT gets CONNACK 0x01 at once (stock: the client hangs).
Sessions are keyed by tenant/device/client-id, so devices cannot collide on client ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED, SERVER_UNAVAILABLE
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from .acl import TopicAccessPlugin
from .admission import SocketAdmission, SocketTicket, TenantConnections, enable_tcp_keepalive
from .audit import audit
from .auth.outcome import Refusal
from .connect_packet import ConnectRejected, read_connect_packet
from .connection import QOS2_IDS_ATTR, CloseReason, GatewayProtocolHandler, GatewayStreamWriter, ReceivedMessage
from .delivery import Delivery
from .identity import (
    CLIENT_ID_ATTR,
    RETRY_LATER_ATTR,
    DeviceIdentity,
    identity_of,
    owner_key,
    owner_of,
    session_key,
)
from .keyed_lock import KeyedLock
from .kp1 import topic as kp1_topic
from .kp1.epmp import Epmp
from .router import Router
from .services import GatewayServices

log = logging.getLogger(__name__)

TAKEOVER_WAIT = 5.0
SESSION_CAP_GRACE = 1.0  # seconds a CONNECT over its device's session cap waits for one to end
# Refusals that are a configured limit, not a credential problem: counted in `limitsHit` too.
LIMIT_REFUSALS = frozenset(
    {"max_connections", "max_pending_connects_per_address", "max_sessions_per_device", "tenant_max_connections"}
)
# Session state a persistent session keeps across reconnects (everything else comes from the CONNECT).
SESSION_STATE_ATTRS = frozenset({QOS2_IDS_ATTR})
PERSISTENT_FIELDS = (
    "will_flag",
    "will_message",
    "will_qos",
    "will_retain",
    "will_topic",
    "keep_alive",
    "username",
    "password",
    "remote_address",
    "remote_port",
    "ssl_object",
    "clean_session",
)


class GatewayBroker(Broker):
    def __init__(
        self,
        config: dict[str, Any],
        *,
        services: GatewayServices,
        ssl_context_factory: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        # Set before Broker.__init__, which loads the plugins that look these up.
        self.services = services
        self._ssl_context_factory = ssl_context_factory
        super().__init__(config)
        settings = services.settings
        self._connections: dict[str, asyncio.Task[Any]] = {}
        self._owner_locks = KeyedLock()  # CONNECTs of one device (or service account), one at a time
        self._owner_sessions: dict[str, set[str]] = {}  # owner -> its session keys, connected or kept
        self._tenant_connected = TenantConnections()
        self._offline_since: dict[str, float] = {}  # kept persistent sessions: since when (monotonic)
        self._device_order = KeyedLock()  # 10/EPMP requests of one device, in arrival order
        self._admission = SocketAdmission(settings.max_connections, settings.max_pending_connects_per_address)
        self._epmp_tasks: set[asyncio.Task[None]] = set()
        self._epmp_pending: Counter[str] = Counter()  # per device, whichever of its connections sent them
        self._tls_listeners: dict[str, ssl.SSLContext] = {}
        self._closing = False
        acl = [p for p in self.plugins_manager.plugins if isinstance(p, TopicAccessPlugin)]
        if len(acl) != 1:
            raise AMQTTError("GatewayBroker needs exactly one TopicAccessPlugin")
        self._acl = acl[0]
        self.router = Router(settings, services.metrics, self._allowed)

    # -- listeners ----------------------------------------------------------------------------

    def _create_ssl_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        if self._ssl_context_factory is None:
            raise AMQTTError("TLS listener configured without an SSL context factory")
        return self._ssl_context_factory()

    @classmethod
    def _split_bindaddr_port(cls, port_str: str, default_port: int) -> tuple[str | None, int]:
        address, port = super()._split_bindaddr_port(port_str, default_port)
        if address and address.startswith("[") and address.endswith("]"):
            address = address[1:-1]  # amqtt keeps the brackets of an IPv6 literal
        return address, port

    @property
    def open_sockets(self) -> int:
        """Sockets counted against `max_connections` right now (TLS ones from before the handshake)."""
        return self._admission.open_sockets

    def epmp_pending(self, owner: str) -> int:
        """10/EPMP requests of a device (`<tenant>/<device>`) waiting to be answered."""
        return self._epmp_pending[owner]

    def bound_port(self, listener_name: str) -> int:
        server = self._servers[listener_name].instance
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if ssl_context is not None and listener_type == ListenerType.TCP:
            # We run the TLS handshake ourselves (stream_connected): under connect_timeout, and a
            # refused certificate becomes a logged, counted refusal instead of asyncio's silence.
            self._tls_listeners[listener_name] = ssl_context
            ssl_context = None
        return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        """Every socket is admitted (and counted) before anything else, a TLS handshake included."""
        peer = writer.get_extra_info("peername")
        ticket = "shutting_down" if self._closing else self._admission.admit(str(peer[0]) if peer else "")
        if isinstance(ticket, str):
            self._refused(ticket, peer)
            writer.transport.abort()
            return
        connection = GatewayStreamWriter(writer)
        # one connect_timeout for the TLS handshake and the CONNECT together (docs/security.md)
        deadline = asyncio.get_running_loop().time() + self.services.settings.connect_timeout
        try:
            enable_tcp_keepalive(writer.get_extra_info("socket"))
            context = self._tls_listeners.get(listener_name)
            if context is None or await self._tls_handshake(writer, context, deadline):
                await self._serve(listener_name, StreamReaderAdapter(reader), connection, ticket, deadline)
        except Exception:
            log.exception("connection handling failed")
        finally:
            self._admission.release(ticket)
            connection.abort()

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        """amqtt's entry for websocket and external listeners: the gateway serves TCP listeners only."""
        log.error("listener %s is not a TCP listener; the gateway serves only TCP and TLS", listener_name)
        await writer.close()

    async def _tls_handshake(self, writer: asyncio.StreamWriter, context: ssl.SSLContext, deadline: float) -> bool:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context)
            return True
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            reason, detail = _tls_refusal(exc)
            self._refused(reason, peer, detail=detail)
            writer.transport.abort()
            return False

    # -- one connection, start to end -----------------------------------------------------------

    async def _serve(
        self,
        listener_name: str,
        reader: ReaderAdapter,
        writer: GatewayStreamWriter,
        ticket: SocketTicket,
        deadline: float,
    ) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                raw = await read_connect_packet(reader)
        except TimeoutError:
            self._refused("connect_timeout", writer.get_peer_info())
            return
        except ConnectRejected as exc:
            self._refused(exc.reason, writer.get_peer_info())
            if exc.return_code is not None:
                await self._send_connack(writer, exc.return_code)
            return
        finally:
            self._admission.connect_read(ticket)
        try:
            handler, incoming = await GatewayProtocolHandler.init_from_connect(
                BufferReader(raw), writer, self.plugins_manager
            )
        except (MQTTError, AMQTTError, NoDataError, ValueError, UnicodeDecodeError) as exc:
            self._refused("malformed_connect", writer.get_peer_info(), detail=str(exc))
            return
        assert isinstance(handler, GatewayProtocolHandler)
        handler.configure(self.services.settings)
        if incoming.keep_alive > 0:
            incoming.keep_alive = math.ceil(incoming.keep_alive * 1.5)

        if not await self._authenticate(incoming, self.listeners_config[listener_name]):
            retry = incoming.attributes.get(RETRY_LATER_ATTR, False)
            await self._send_connack(writer, SERVER_UNAVAILABLE if retry else NOT_AUTHORIZED)
            return
        identity = identity_of(incoming)
        assert identity is not None and incoming.client_id is not None
        mqtt_client_id = incoming.client_id
        key = session_key(identity, mqtt_client_id)
        incoming.attributes[CLIENT_ID_ATTR] = mqtt_client_id

        counted = False  # in the tenant's connected sessions (until the session is over)
        try:
            async with self._owner_locks.hold(owner_key(identity)):
                await self._end_connection(key, CloseReason.TAKEN_OVER)
                limit = await self._make_room(key, identity)
                if limit is not None:
                    self._refused(limit, writer.get_peer_info(), identity=identity)
                    await self._send_connack(writer, SERVER_UNAVAILABLE)
                    return
                if not identity.is_service:
                    self._tenant_connected.add(identity.tenant_id)
                    counted = True
                session = await self._adopt_session(key, incoming)
                handler.attach(session, reader, writer)
                self._bind(key, identity, session, handler)
                delivery = self.router.delivery(key, session, on_slow=lambda: self._slow_consumer(key))
                session.transitions.connect()
                # Re-validated inside the registry transaction: a revocation that committed while we
                # authenticated refuses here; one that commits later finds this session to close.
                recorded = await self._record_connect(key, identity, mqtt_client_id, session)
            if not recorded:
                self._refused(Refusal.SESSION_REVOKED.value, writer.get_peer_info(), identity=identity)
                await self._unbind(key, session, handler, discard=True)
                await self._send_connack(writer, NOT_AUTHORIZED)
                return
            try:
                await self._run_session(session, handler, delivery)
            finally:
                delivery.detach_from(handler)
                if counted:  # over before its disconnect is written to the registry
                    self._tenant_connected.remove(identity.tenant_id)
                    counted = False
                await self._finish(key, identity, session, handler)
        finally:
            if counted:
                self._tenant_connected.remove(identity.tenant_id)

    async def _make_room(self, key: str, identity: DeviceIdentity) -> str | None:
        """The per-device and per-tenant session caps; None when the session may be bound.

        At the device's cap, in this order: sessions already ending (DISCONNECT read, socket gone) are
        waited for; the oldest offline persistent session gives way; then the device's live sessions
        get `SESSION_CAP_GRACE` to end (short-lived clients in a row overlap: each CONNECT arrives
        before the previous client's DISCONNECT is read). Only then is the CONNECT refused."""
        settings = self.services.settings
        cap = identity.tenant_max_connections
        tenant_capped = not identity.is_service and cap is not None
        # the tenant first, before evicting anything: a refused CONNECT changes nothing
        if tenant_capped and not await self._tenant_connected.below(identity.tenant_id, cap or 0, SESSION_CAP_GRACE):
            return "tenant_max_connections"
        waited_ending = waited_live = False
        while True:
            others = self._owner_sessions.get(owner_key(identity), set()) - {key}
            if len(others) < settings.max_sessions_per_device:
                break
            live = [k for k in others if k in self._connections]
            ending = [self._connections[k] for k in live if self._ending(k)]
            if ending and not waited_ending:
                await asyncio.wait(ending, timeout=TAKEOVER_WAIT)
                waited_ending = True
                continue
            offline = [k for k in others if k not in self._connections and k in self._sessions]
            if offline:
                oldest = min(offline, key=lambda k: self._offline_since.get(k, 0.0))
                self.services.metrics.limits_hit["max_sessions_per_device"] += 1
                await self._delete_session(oldest)
                continue
            if live and not waited_live:
                tasks = [self._connections[k] for k in live]
                await asyncio.wait(tasks, timeout=SESSION_CAP_GRACE, return_when=asyncio.FIRST_COMPLETED)
                waited_live = True
                continue
            return "max_sessions_per_device"
        if not identity.is_service and cap is not None and self._tenant_connected[identity.tenant_id] >= cap:
            return "tenant_max_connections"  # checked again: the waits above let others in
        return None

    def _ending(self, key: str) -> bool:
        handler = self._sessions[key][1]
        return isinstance(handler, GatewayProtocolHandler) and (
            handler.close_reason is not None or handler.reader_done.is_set()
        )

    def _bind(self, key: str, identity: DeviceIdentity, session: Session, handler: GatewayProtocolHandler) -> None:
        self._offline_since.pop(key, None)
        self._sessions[key] = (session, handler)
        self._owner_sessions.setdefault(owner_key(identity), set()).add(key)
        self._connections[key] = asyncio.current_task()  # type: ignore[assignment]

    async def _run_session(self, session: Session, handler: GatewayProtocolHandler, delivery: Delivery) -> None:
        self.services.metrics.connects_accepted += 1
        identity = identity_of(session)
        audit(
            "connected",
            tenant=identity.tenant_id if identity else None,
            device=identity.device_id if identity else None,
            client_id=session.attributes.get(CLIENT_ID_ATTR),
            remote=f"{session.remote_address}:{session.remote_port}",
            resumed=bool(session.parent),
        )
        await handler.mqtt_connack_authorize(True)
        await self.plugins_manager.fire_event(
            BrokerEvents.CLIENT_CONNECTED, client_id=session.client_id, client_session=session
        )
        await handler.start()
        # What a persistent session queued while offline goes first. Retained messages are sent when a
        # subscription is made [MQTT-3.3.1-6], not again on every resume (they would duplicate what
        # was queued, and on a full queue close the client as a slow consumer each time it returns).
        delivery.attach(handler)
        await self._client_message_loop(session, handler)

    async def _finish(
        self, key: str, identity: DeviceIdentity, session: Session, handler: GatewayProtocolHandler
    ) -> None:
        """Runs however the connection ended: stop, unbind, record why."""
        with contextlib.suppress(Exception):
            await self._stop_handler(handler)
        if session.transitions.state == "connected":
            session.transitions.disconnect()
        await self._unbind(key, session, handler, discard=bool(session.clean_session or handler.discard_session))
        reason = handler.close_reason or CloseReason.SOCKET_ERROR
        self.services.metrics.disconnects[reason] += 1
        audit(
            "disconnected",
            tenant=identity.tenant_id,
            device=identity.device_id,
            client_id=session.attributes.get(CLIENT_ID_ATTR),
            reason=reason,
            detail=handler.close_detail,
        )
        if identity.is_service:
            return
        try:
            await self.services.registry.connections.record_disconnect(
                session_key=key, reason=reason, detail=handler.close_detail
            )
        except Exception:
            log.exception("could not record the disconnect of %s", key)

    async def _unbind(self, key: str, session: Session, handler: BrokerProtocolHandler, *, discard: bool) -> None:
        if self._connections.get(key) is asyncio.current_task():
            del self._connections[key]
            self._offline_since[key] = time.monotonic()
        bound = self._sessions.get(key)
        if bound is not None and bound[1] is handler and discard:
            await self._delete_session(key)

    async def _delete_session(self, client_id: str) -> None:
        """amqtt's, with the session's subscriptions, queue and index entry."""
        self._forget_key(client_id)
        await super()._delete_session(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        """amqtt's (session expiry, shutdown), with the session's subscriptions, queue and index entry."""
        self._forget_key(client_id)
        await super()._cleanup_session(client_id)

    async def _del_all_subscriptions(self, session: Session) -> None:
        """Subscriptions live in our index (gateway/subscriptions.py), not in amqtt's filter dict."""
        self.router.index.remove_session(session.client_id)

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        return int(self.router.unsubscribe(session.client_id, a_filter))

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """One SUBSCRIBE filter: checked, capped per session, indexed; the SUBACK return code."""
        topic_filter, qos = subscription
        return self.router.subscribe(session.client_id, session, topic_filter, qos)

    def _forget_key(self, key: str) -> None:
        self.router.drop(key)
        self._offline_since.pop(key, None)
        owner = owner_of(key)
        keys = self._owner_sessions.get(owner)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._owner_sessions[owner]

    async def _adopt_session(self, key: str, incoming: Session) -> Session:
        existing = self._sessions.get(key)
        if incoming.clean_session or existing is None:
            if existing is not None:
                await self._delete_session(key)
            incoming.client_id = key
            incoming.parent = 0
            return incoming
        session = existing[0]
        for name in PERSISTENT_FIELDS:
            setattr(session, name, getattr(incoming, name))
        kept = {k: v for k, v in session.attributes.items() if k in SESSION_STATE_ATTRS}
        session.attributes = {**incoming.attributes, **kept}
        session.parent = 1
        return session

    async def _record_connect(self, key: str, identity: DeviceIdentity, client_id: str, session: Session) -> bool:
        try:
            if identity.is_service:  # not a device: no presence; still re-checked against a deletion
                account = await self.services.registry.service_accounts.find(identity.tenant_id, identity.device_id)
                return account is not None
            return await self.services.registry.connections.record_connect(
                session_key=key,
                tenant_id=identity.tenant_id,
                device_id=identity.device_id,
                node=self.services.settings.node_id,
                client_id=client_id,
                remote_address=session.remote_address,
                credential_id=identity.credential_id,
                credential_version=identity.credential_version,
            )
        except Exception:
            log.exception("could not record the connect of %s", key)
            return False

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        if isinstance(disconnect_waiter.result(), DisconnectPacket) and isinstance(handler, GatewayProtocolHandler):
            handler.note_client_disconnect()
        # Messages the client published before it left are still routed (amqtt drops them).
        queue = client_session.delivered_message_queue
        while not queue.empty():
            delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            delivered.set_result(queue.get_nowait())
            if not await self._handle_message_delivery(client_session, handler, delivered):
                break
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    @staticmethod
    async def _send_connack(writer: GatewayStreamWriter, return_code: int) -> None:
        with contextlib.suppress(Exception):
            writer.write(bytes((0x20, 0x02, 0x00, return_code)))
            async with asyncio.timeout(2):
                await writer.drain()

    def _refused(
        self,
        reason: str,
        peer: tuple[str, int] | None,
        *,
        detail: str | None = None,
        identity: DeviceIdentity | None = None,
    ) -> None:
        self.services.metrics.connects_refused[reason] += 1
        if reason in LIMIT_REFUSALS:
            self.services.metrics.limits_hit[reason] += 1
        audit(
            "connect_refused",
            logging.WARNING,
            reason=reason,
            remote=f"{peer[0]}:{peer[1]}" if peer else None,
            tenant=identity.tenant_id if identity else None,
            device=identity.device_id if identity else None,
            detail=detail,
        )

    # -- closing sessions (takeover, revocation, shutdown) ----------------------------------------

    async def _end_connection(self, key: str, reason: str, *, discard: bool = False) -> None:
        bound = self._sessions.get(key)
        task = self._connections.get(key)
        if bound is not None and isinstance(bound[1], GatewayProtocolHandler):
            bound[1].close(reason, discard_session=discard)
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=TAKEOVER_WAIT)

    async def close_sessions(
        self, match: Callable[[DeviceIdentity], bool], *, reason: str, detail: str | None = None
    ) -> int:
        """Closes every live session whose identity matches, and forgets matching persistent ones."""
        tasks, closed = [], 0
        for key, (session, handler) in list(self._sessions.items()):
            identity = identity_of(session)
            if identity is None or not match(identity):
                continue
            task = self._connections.get(key)
            if task is not None and isinstance(handler, GatewayProtocolHandler):
                handler.close(reason, detail, discard_session=True)
                tasks.append(task)
                closed += 1
            elif session.transitions.state != "connected":
                await self._delete_session(key)
        if tasks:
            await asyncio.wait(tasks, timeout=TAKEOVER_WAIT)
        self.services.metrics.sessions_kicked += closed
        if reason == CloseReason.KICKED:
            self._forget_retained(match)
        return closed

    def _forget_retained(self, match: Callable[[DeviceIdentity], bool]) -> None:
        """A revoked or deleted identity's retained messages go too: a token given again later
        (POST .../tokens {"token"}) must not inherit what its previous holder left behind."""
        self.router.forget_retained(match)

    def _slow_consumer(self, key: str) -> None:
        bound = self._sessions.get(key)
        if bound is not None and key in self._connections and isinstance(bound[1], GatewayProtocolHandler):
            bound[1].close(CloseReason.SLOW_CONSUMER, "its queue filled up with QoS 1/2 messages")

    async def shutdown(self) -> None:
        self._closing = True
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        await self.close_sessions(lambda _: True, reason=CloseReason.SHUTDOWN)
        if self._epmp_tasks:  # requests already read are answered (and written) before the registry closes
            await asyncio.wait(self._epmp_tasks, timeout=TAKEOVER_WAIT)
        await super().shutdown()

    # -- publishes: authorization, then 1/KP routing or broadcast ---------------------------------

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """amqtt's, minus the MESSAGE_RECEIVED event it fires before the ACL, plus 1/KP routing:
        a request to a gateway extension is answered, not broadcast. The message is acknowledged to
        its publisher once this is done with it (a 10/EPMP request: once its write has committed)."""
        message = wait_deliver.result()
        if message is None:
            return True
        done: Callable[[], None] = message.done if isinstance(message, ReceivedMessage) else _nothing
        try:
            topic = message.topic
            if topic.startswith("$"):  # [MQTT-4.7.2-1]: `$` topics are the gateway's
                if isinstance(handler, GatewayProtocolHandler):
                    # the topic is not echoed into the logs: it may hold an endpoint token
                    handler.close(CloseReason.PROTOCOL_ERROR, "PUBLISH to a '$' topic")
                return False
            if not self._allowed(client_session, topic, Action.PUBLISH):
                return True
            request = kp1_topic.parse(topic) if self.services.epmp is not None else None
            if request is not None and request.extension == self.services.settings.epmp_extension:
                qos = message.qos or 0
                if qos == 0:  # nothing to acknowledge: the reader may go on at once
                    self._submit_epmp(client_session, request, bytes(message.data), qos, _nothing)
                else:  # acknowledged once its write has committed
                    self._submit_epmp(client_session, request, bytes(message.data), qos, done)
                    done = _nothing
                return True
            await self.plugins_manager.fire_event(
                BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=message
            )
            self.router.route(topic, bytes(message.data), message.qos or 0)
            if message.publish_packet and message.publish_packet.retain_flag:
                self.router.retain(client_session, topic, bytes(message.data), message.qos or 0)
            return True
        finally:
            done()

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        """amqtt's entry for wills and plugin publishes: through our router (amqtt's broadcast loop
        scans every filter, and spawns a task per subscriber that nothing bounds)."""
        if topic and data is not None:
            self.router.route(topic, bytes(data), 2 if force_qos is None else force_qos)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if topic_name:
            self.router.retain(source_session, topic_name, bytes(data or b""), qos or 0)

    def _submit_epmp(
        self, session: Session, request: kp1_topic.Kp1Topic, payload: bytes, qos: int, done: Callable[[], None]
    ) -> None:
        """A device's requests are answered in the order they arrived, whichever of its sessions sent
        them, so a read sees an earlier write even from another connection. At most `epmp_max_pending`
        wait per session; beyond that a request is refused with `/error` 429 (when it has a request id)
        and counted, so one flood cannot starve other devices."""
        identity = identity_of(session)
        epmp = self.services.epmp
        if identity is None or epmp is None:
            done()
            return
        owner = owner_key(identity)
        if self._epmp_pending[owner] >= self.services.settings.epmp_max_pending:
            self.services.metrics.epmp_dropped += 1
            self.services.metrics.limits_hit["epmp_max_pending"] += 1
            if request.request_id is not None:
                reply = epmp.error_reply(request, 429, "too many requests pending; retry later")
                self.router.route(reply.topic, reply.payload, qos)
            done()
            return
        self._epmp_pending[owner] += 1
        task = asyncio.create_task(self._answer_epmp(epmp, identity, request, payload, qos, done))
        self._epmp_tasks.add(task)
        task.add_done_callback(self._epmp_tasks.discard)

    async def _answer_epmp(
        self,
        epmp: Epmp,
        identity: DeviceIdentity,
        request: kp1_topic.Kp1Topic,
        payload: bytes,
        qos: int,
        done: Callable[[], None],
    ) -> None:
        try:
            async with self._device_order.hold(f"{identity.tenant_id}/{identity.device_id}"):
                reply = await epmp.handle(identity, request, payload)
                done()  # committed (or refused): now the PUBACK / PUBREC may go
                self.services.metrics.epmp_requests[request.path or "(empty)"] += 1
                if reply is not None:
                    # Through the router: only sessions holding this token may receive it.
                    self.router.route(reply.topic, reply.payload, qos)
        finally:
            owner = owner_key(identity)
            self._epmp_pending[owner] -= 1
            if self._epmp_pending[owner] <= 0:
                del self._epmp_pending[owner]
            done()

    def event_consumers(self, tenant_id: str, topic: str) -> list[BrokerProtocolHandler]:
        """Handlers of the tenant's connected service accounts subscribed to `topic` (found through
        the subscription index: the cost does not grow with the number of connected devices)."""
        consumers: dict[str, BrokerProtocolHandler] = {}
        for key, _qos, _filter in self.router.index.match(topic):
            bound = self._sessions.get(key)
            if bound is None or key in consumers or key not in self._connections:
                continue
            session, handler = bound
            identity = identity_of(session)
            if identity is None or not identity.is_service or identity.tenant_id != tenant_id:
                continue
            if session.transitions.state == "connected" and self._acl.allowed(session, topic, Action.RECEIVE):
                consumers[key] = handler
        return list(consumers.values())

    # -- topic authorization ------------------------------------------------------------------------

    def _allowed(self, session: Session | None, topic: str, action: Action) -> bool:
        allowed = self._acl.allowed(session, topic, action)
        if not allowed:
            if action == Action.PUBLISH:
                self.services.metrics.publishes_denied += 1
            elif action == Action.SUBSCRIBE:
                self.services.metrics.subscriptions_denied += 1
        return allowed

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return self._allowed(session, topic, action)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        self.router.replay_retained(session.client_id, topic_filter, qos)


def _nothing() -> None:
    pass


_VERIFY_REASONS = {
    "certificate has expired": "tls_certificate_expired",
    "certificate is not yet valid": "tls_certificate_not_yet_valid",
    "unable to get local issuer certificate": "tls_unknown_ca",
    "self-signed certificate": "tls_unknown_ca",
    "self signed certificate": "tls_unknown_ca",
    "unable to verify the first certificate": "tls_unknown_ca",
}


def _tls_refusal(exc: BaseException) -> tuple[str, str]:
    """A reason code for a failed TLS handshake, from OpenSSL's own words."""
    if isinstance(exc, TimeoutError):
        return "tls_handshake_timeout", "no TLS handshake within connect_timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = str(exc.verify_message or "")
        return _VERIFY_REASONS.get(message, "tls_certificate_refused"), message
    if isinstance(exc, ssl.SSLError):
        return "tls_handshake_failed", str(exc.reason or exc)
    return "tls_handshake_aborted", type(exc).__name__
