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
from collections.abc import Callable
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.mqtt.connack import NOT_AUTHORIZED
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from .acl import TopicAccessPlugin
from .audit import audit
from .auth.outcome import Refusal
from .connect_packet import ConnectRejected, read_connect_packet
from .connection import CloseReason, GatewayProtocolHandler, GatewayStreamWriter
from .identity import CLIENT_ID_ATTR, DeviceIdentity, identity_of, session_key
from .keyed_lock import KeyedLock
from .kp1 import topic as kp1_topic
from .services import GatewayServices

log = logging.getLogger(__name__)

TAKEOVER_WAIT = 5.0
EPMP_ATTR = "gateway.epmp"
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
        self._connections: dict[str, asyncio.Task[Any]] = {}
        self._key_locks = KeyedLock()
        self._device_order = KeyedLock()  # 10/EPMP requests of one device, in arrival order
        self._open_sockets = 0
        self._epmp_tasks: set[asyncio.Task[None]] = set()
        self._tls_listeners: dict[str, ssl.SSLContext] = {}
        self._closing = False
        acl = [p for p in self.plugins_manager.plugins if isinstance(p, TopicAccessPlugin)]
        if len(acl) != 1:
            raise AMQTTError("GatewayBroker needs exactly one TopicAccessPlugin")
        self._acl = acl[0]

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
        context = self._tls_listeners.get(listener_name)
        if context is not None and not await self._tls_handshake(writer, context):
            return
        await self._client_connected(listener_name, StreamReaderAdapter(reader), GatewayStreamWriter(writer))

    async def _tls_handshake(self, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> bool:
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(self.services.settings.connect_timeout):
                await writer.start_tls(context)
            return True
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            reason, detail = _tls_refusal(exc)
            self.services.metrics.connects_refused[reason] += 1
            audit(
                "connect_refused",
                logging.WARNING,
                reason=reason,
                remote=f"{peer[0]}:{peer[1]}" if peer else None,
                detail=detail,
            )
            writer.transport.abort()
            return False

    # -- one connection, start to end -----------------------------------------------------------

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        assert isinstance(writer, GatewayStreamWriter)
        if self._closing or self._open_sockets >= self.services.settings.max_connections:
            self._refused("max_connections" if not self._closing else "shutting_down", writer)
            writer.abort()
            return
        self._open_sockets += 1
        try:
            await self._serve(listener_name, reader, writer)
        except Exception:
            log.exception("connection handling failed")
        finally:
            self._open_sockets -= 1
            writer.abort()

    async def _serve(self, listener_name: str, reader: ReaderAdapter, writer: GatewayStreamWriter) -> None:
        try:
            async with asyncio.timeout(self.services.settings.connect_timeout):
                raw = await read_connect_packet(reader)
        except TimeoutError:
            self._refused("connect_timeout", writer)
            return
        except ConnectRejected as exc:
            self._refused(exc.reason, writer)
            if exc.return_code is not None:
                await self._send_connack(writer, exc.return_code)
            return
        try:
            handler, incoming = await GatewayProtocolHandler.init_from_connect(
                BufferReader(raw), writer, self.plugins_manager
            )
        except (MQTTError, AMQTTError, NoDataError, ValueError, UnicodeDecodeError) as exc:
            self._refused("malformed_connect", writer, detail=str(exc))
            return
        assert isinstance(handler, GatewayProtocolHandler)
        handler.max_packet_bytes = self.services.settings.max_packet_bytes
        if incoming.keep_alive > 0:
            incoming.keep_alive = math.ceil(incoming.keep_alive * 1.5)

        if not await self._authenticate(incoming, self.listeners_config[listener_name]):
            await self._send_connack(writer, NOT_AUTHORIZED)
            return
        identity = identity_of(incoming)
        assert identity is not None and incoming.client_id is not None
        mqtt_client_id = incoming.client_id
        key = session_key(identity, mqtt_client_id)
        incoming.attributes[CLIENT_ID_ATTR] = mqtt_client_id

        async with self._key_locks.hold(key):
            await self._end_connection(key, CloseReason.TAKEN_OVER)
            session = await self._adopt_session(key, incoming)
            handler.attach(session, reader, writer)
            self._sessions[key] = (session, handler)
            self._connections[key] = asyncio.current_task()  # type: ignore[assignment]
            session.transitions.connect()
            # Re-validated inside the registry transaction: a revocation that committed while we
            # authenticated refuses here; one that commits later finds this session to close.
            recorded = await self._record_connect(key, identity, mqtt_client_id, session)
        if not recorded:
            self.services.metrics.connects_refused[Refusal.SESSION_REVOKED.value] += 1
            audit(
                "connect_refused",
                logging.WARNING,
                reason=Refusal.SESSION_REVOKED.value,
                tenant=identity.tenant_id,
                device=identity.device_id,
            )
            await self._unbind(key, session, handler, discard=True)
            await self._send_connack(writer, NOT_AUTHORIZED)
            return
        try:
            await self._run_session(session, handler)
        finally:
            await self._finish(key, identity, session, handler)

    async def _run_session(self, session: Session, handler: GatewayProtocolHandler) -> None:
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
        await self._publish_session_retained_messages(session)
        for subscription in self._subscriptions_of(session):
            await self._publish_retained_messages_for_subscription(subscription, session)
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
        bound = self._sessions.get(key)
        if bound is not None and bound[1] is handler and discard:
            await self._delete_session(key)

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
        session.attributes = dict(incoming.attributes)
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

    def _refused(self, reason: str, writer: GatewayStreamWriter, detail: str | None = None) -> None:
        self.services.metrics.connects_refused[reason] += 1
        peer = writer.get_peer_info()
        audit(
            "connect_refused",
            logging.WARNING,
            reason=reason,
            remote=f"{peer[0]}:{peer[1]}" if peer else None,
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
        for topic, message in list(self._retained_messages.items()):
            identity = identity_of(message.source_session)
            if identity is not None and match(identity):
                del self._retained_messages[topic]

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
        a request to a gateway extension is answered, not broadcast."""
        message = wait_deliver.result()
        if message is None:
            return True
        topic = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            if isinstance(handler, GatewayProtocolHandler):  # [MQTT-3.3.2-2], [MQTT-4.7.2-1]
                handler.close(CloseReason.PROTOCOL_ERROR, f"invalid PUBLISH topic {topic[:64]!r}")
            return False
        if not await self._topic_filtering(client_session, topic, Action.PUBLISH):
            return True
        request = kp1_topic.parse(topic) if self.services.epmp is not None else None
        if request is not None and request.extension == self.services.settings.epmp_extension:
            self._submit_epmp(client_session, request, bytes(message.data), message.qos or 0)
            return True
        await self.plugins_manager.fire_event(
            BrokerEvents.MESSAGE_BROADCAST, client_id=client_session.client_id, message=message
        )
        await self._broadcast_message(client_session, topic, message.data)
        if message.publish_packet and message.publish_packet.retain_flag:
            await self.retain_message(client_session, topic, message.data, message.qos)
        return True

    def _submit_epmp(self, session: Session, request: kp1_topic.Kp1Topic, payload: bytes, qos: int) -> None:
        """A device's requests are answered in the order they arrived, whichever of its sessions sent
        them, so a read sees an earlier write even from another connection. At most `epmp_max_pending`
        wait per session; the rest are dropped (counted), so one flood cannot starve other devices."""
        identity = identity_of(session)
        if identity is None:
            return
        state = session.attributes.setdefault(EPMP_ATTR, {"pending": 0})
        if state["pending"] >= self.services.settings.epmp_max_pending:
            self.services.metrics.epmp_dropped += 1
            return
        state["pending"] += 1
        task = asyncio.create_task(self._answer_epmp(identity, state, request, payload, qos))
        self._epmp_tasks.add(task)
        task.add_done_callback(self._epmp_tasks.discard)

    async def _answer_epmp(
        self, identity: DeviceIdentity, state: dict[str, int], request: kp1_topic.Kp1Topic, payload: bytes, qos: int
    ) -> None:
        try:
            async with self._device_order.hold(f"{identity.tenant_id}/{identity.device_id}"):
                epmp = self.services.epmp
                if epmp is None:
                    return
                reply = await epmp.handle(identity, request, payload)
                self.services.metrics.epmp_requests[request.path or "(empty)"] += 1
                if reply is not None:
                    # Through the broadcast path: only sessions holding this token may receive it.
                    await self._broadcast_message(None, reply.topic, reply.payload, qos)
        finally:
            state["pending"] -= 1

    def event_consumers(self, tenant_id: str, topic: str) -> list[BrokerProtocolHandler]:
        """Handlers of the tenant's connected service accounts subscribed to `topic`."""
        consumers = []
        for key, (session, handler) in self._sessions.items():
            identity = identity_of(session)
            if identity is None or not identity.is_service or identity.tenant_id != tenant_id:
                continue
            if key not in self._connections or session.transitions.state != "connected":
                continue
            if not self._acl.allowed(session, topic, Action.RECEIVE):
                continue
            if any(self._matches(topic, topic_filter) for topic_filter, _ in self._subscriptions_of(session)):
                consumers.append(handler)
        return consumers

    # -- topic authorization and retained messages ---------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        allowed = self._acl.allowed(session, topic, action)
        if not allowed:
            if action == Action.PUBLISH:
                self.services.metrics.publishes_denied += 1
            elif action == Action.SUBSCRIBE:
                self.services.metrics.subscriptions_denied += 1
        return allowed

    def _subscriptions_of(self, session: Session) -> list[tuple[str, int]]:
        return [
            (topic_filter, qos)
            for topic_filter, subscribers in self._subscriptions.items()
            for subscriber, qos in subscribers
            if subscriber.client_id == session.client_id
        ]

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = [
            asyncio.ensure_future(
                handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)
            )
            for topic, retained in list(self._retained_messages.items())
            if self._matches(topic, topic_filter) and self._acl.allowed(session, topic, Action.RECEIVE)
        ]
        if tasks:
            await asyncio.wait(tasks)


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
