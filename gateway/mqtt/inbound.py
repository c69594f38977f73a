"""What the broker does with a client's PUBLISH, SUBSCRIBE and UNSUBSCRIBE: authorize it, then route
it, or hand it to the gateway extension it addresses over 1/KP: 10/EPMP metadata and 11/CEP commands
(requests that read or write the registry), 2/DCP data (forwarded from memory), and the extensions a
tenant forwards. A service account's command invocation (`$gateway/commands/...`) is a request too.

Nothing else reads the registry on the publish path: a request runs in its own task, in arrival
order per device (or account), and its QoS 1/2 acknowledgement waits until it has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..auth.identity import DeviceIdentity, identity_of, owner_key
from ..auth.will import will_authorized
from ..kp1 import cep, cmp, dcp
from ..kp1 import topic as kp1_topic
from ..kp1.epmp import RESOURCES
from ..kp1.reply import Reply, error_reply
from ..node.context import GatewayServices
from ..ops.audit import audit
from ..services.topics import COMMANDS_ROOT
from .amqtt_api import Action
from .codec import Publish
from .connection import CloseReason, Connection
from .keyed_lock import KeyedLock
from .router import SUBSCRIBE_FAILURE, Allowed, Router
from .session import ClientSession

if TYPE_CHECKING:
    from ..services.commands.devices import DeviceCommands
    from ..services.policies import PolicyService

log = logging.getLogger(__name__)


class Inbound:
    def __init__(self, services: GatewayServices, router: Router, allowed: Allowed) -> None:
        self._services = services
        self._router = router
        self._allowed = allowed
        self._order = KeyedLock()  # the requests of one device (or account), in arrival order
        self._pending: Counter[str] = Counter()  # per device, whichever of its connections sent them
        self.request_tasks: set[asyncio.Task[None]] = set()
        self._fresh: dict[str, list[str]] = {}  # per session: filters new in the SUBSCRIBE being handled

    def pending_requests(self, owner: str) -> int:
        return self._pending[owner]

    # -- PUBLISH -------------------------------------------------------------------------------------------

    def received(self, connection: Connection, publish: Publish) -> Awaitable[None] | None:
        """Routed at once (in the order the client sent them); a request returns the future of its
        commit, which its acknowledgement waits for."""
        session, topic = connection.session, publish.topic
        if topic.startswith("$"):
            return self._gateway_topic(connection, publish)
        if not self._allowed(session, topic, Action.PUBLISH):
            return None
        handled, committed = self._extension(session, topic, publish.data, publish.qos)
        if handled:
            return committed
        identity = identity_of(session)
        assert identity is not None  # the ACL allowed it
        self._router.route(topic, publish.data, publish.qos, tenant=identity.tenant_id)
        if publish.retain:
            self._router.retain(session, topic, publish.data, publish.qos)
        return None

    def _extension(
        self, session: ClientSession, topic: str, payload: bytes, qos: int
    ) -> tuple[bool, Awaitable[None] | None]:
        """(handled by a gateway extension, the future of its commit). A forwarded extension is also
        routed as before (not handled)."""
        request = kp1_topic.parse(topic) if topic.startswith("kp1/") else None
        identity = identity_of(session)
        if request is None or identity is None or identity.is_service:
            return False, None
        services, extension = self._services, request.extension
        if extension == services.settings.epmp_extension and services.epmp is not None:
            epmp = services.epmp

            async def answer_epmp() -> Reply | None:
                reply = await epmp.handle(identity, request, payload)
                # by resource, never by the client's own path: that would be a key per request
                services.metrics.epmp_requests[_resource(request)] += 1
                return self._counted(request, reply)

            too_many = lambda: self._too_many(identity, request, qos)  # noqa: E731
            return True, self._ordered(identity, qos, answer_epmp, too_many)
        if extension in (cmp.EXTENSION, cep.EXTENSION):  # requests that read or write the registry
            handler: PolicyService | DeviceCommands | None = services.policies
            if extension == cep.EXTENSION:
                handler = services.commands.devices if services.commands is not None else None
            if handler is not None:
                service = handler

                async def answer() -> Reply | None:
                    return self._counted(request, await service.device_request(session, identity, request, payload))

                return True, self._ordered(identity, qos, answer, lambda: self._too_many(identity, request, qos))
        if services.data is not None:
            if extension == dcp.EXTENSION:
                self._reply(identity, self._counted(request, services.data.collect(identity, request, payload)), qos)
                return True, None
            if services.data.forwards(identity, extension):
                services.data.forward(identity, request, payload)
        return False, None

    def _gateway_topic(self, connection: Connection, publish: Publish) -> Awaitable[None] | None:
        """[MQTT-4.7.2-1]: `$` topics are the gateway's. A service account publishes command invocations
        there; any other publish to one closes the connection."""
        session, topic = connection.session, publish.topic
        identity = identity_of(session)
        commands = self._services.commands
        if identity is None or not identity.is_service or commands is None or not topic.startswith(COMMANDS_ROOT):
            # the topic is not echoed into the logs: it may hold an endpoint token
            connection.close(CloseReason.PROTOCOL_ERROR, "PUBLISH to a '$' topic")
            return None
        if not self._allowed(session, topic, Action.PUBLISH):
            return None
        data = publish.data

        async def invoke() -> None:
            await commands.mqtt.invoke(identity, topic, data)

        refuse = lambda: commands.mqtt.refuse(topic, 429, "too many invocations pending; retry later")  # noqa: E731
        return self._ordered(identity, publish.qos, invoke, refuse)

    async def publish_will(self, session: ClientSession) -> None:
        """An abnormal end: the will goes out like a publish of the device, to an extension too (a will
        on `.../dcx/<token>/json` reaches the applications), once it is authorized again: its topic
        passed the ACL at CONNECT, and the registry says now whether the session still could publish."""
        identity = identity_of(session)
        if not session.will_flag or not session.will_topic or identity is None:
            return
        topic, data = session.will_topic, session.will_message or b""
        try:
            authorized = self._allowed(session, topic, Action.PUBLISH) and await will_authorized(
                self._services.registry, identity, topic
            )
        except Exception:  # the registry failing: the will cannot be authorized, so it does not go out
            log.exception("could not authorize the will of %s", session.key)
            authorized = False
        if not authorized:
            self._services.metrics.wills_refused += 1
            audit("will_refused", logging.WARNING, tenant=identity.tenant_id, device=identity.device_id)
            return
        if self._extension(session, topic, data, session.will_qos)[0]:
            return
        self._router.route(topic, data, session.will_qos, tenant=identity.tenant_id)
        if session.will_retain:
            self._router.retain(session, topic, data, session.will_qos)

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------------------

    def subscribe(self, session: ClientSession, topic_filter: str, qos: int) -> int:
        fresh = topic_filter not in self._router.index.filters_of(session.key)
        code = self._router.subscribe(session.key, session, topic_filter, qos)
        if fresh and code != SUBSCRIBE_FAILURE:
            self._fresh.setdefault(session.key, []).append(topic_filter)
        return code

    def subscribed(self, session: ClientSession, granted: list[tuple[str, int]]) -> None:
        for topic_filter, qos in granted:
            self._router.replay_retained(session.key, topic_filter, qos)
        self._listening(session, self._fresh.pop(session.key, []))

    def resumed(self, session: ClientSession) -> None:
        """A persistent session back with its subscriptions: what was invoked (or changed) while it was away."""
        self._listening(session, list(self._router.index.filters_of(session.key)))

    def _listening(self, session: ClientSession, filters: list[str]) -> None:
        """A device now listens where commands or its group's policy arrive (a new filter, not the same
        one again): it is sent its outstanding commands and its policy, in its request order and under
        its pending-request bound."""
        identity = identity_of(session)
        if identity is None or identity.is_service or not filters:
            return
        commands, policies = self._services.commands, self._services.policies
        if commands is not None and commands.devices.carries_commands(filters):

            async def push_commands() -> None:
                await commands.devices.push_outstanding(session, identity, filters)

            self._ordered(identity, 0, push_commands, lambda: None)
        if policies is not None and policies.carries_config(filters):

            async def push_policy() -> None:
                await policies.push_to(session, identity, filters)

            self._ordered(identity, 0, push_policy, lambda: None)

    def unsubscribe(self, session: ClientSession, topic_filter: str) -> None:
        self._router.unsubscribe(session.key, topic_filter)

    # -- requests ----------------------------------------------------------------------------------------------

    def _ordered(
        self,
        identity: DeviceIdentity,
        qos: int,
        work: Callable[[], Awaitable[Reply | None]],
        refuse: Callable[[], object],
    ) -> Awaitable[None] | None:
        """A device's requests are answered in the order they arrived, whichever of its sessions sent
        them, so a read sees an earlier write even from another connection. At most `epmp_max_pending`
        wait per device; beyond that a request is refused (`refuse`: `/error` 429 when it has a request
        id) and counted, so one flood cannot starve other devices."""
        owner = owner_key(identity)
        metrics = self._services.metrics
        if self._pending[owner] >= self._services.settings.epmp_max_pending:
            metrics.epmp_dropped += 1
            metrics.limits_hit["epmp_max_pending"] += 1
            self._services.dropped_log.note(
                owner, tenant=identity.tenant_id, device=identity.device_id, limit="epmp_max_pending"
            )
            refuse()
            return None
        self._pending[owner] += 1
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._answer(identity, qos, work, committed))
        self.request_tasks.add(task)
        task.add_done_callback(self.request_tasks.discard)
        return committed if qos else None

    async def _answer(
        self,
        identity: DeviceIdentity,
        qos: int,
        work: Callable[[], Awaitable[Reply | None]],
        committed: asyncio.Future[None],
    ) -> None:
        owner = owner_key(identity)
        try:
            async with self._order.hold(owner):
                reply = await work()
                _resolve(committed)  # committed (or refused): now the PUBACK / PUBREC may go
                self._reply(identity, reply, qos)
        except Exception:
            log.exception("a 1/KP request failed")
        finally:
            self._pending[owner] -= 1
            if self._pending[owner] <= 0:
                del self._pending[owner]
            _resolve(committed)

    def _too_many(self, identity: DeviceIdentity, request: kp1_topic.Kp1Topic, qos: int) -> None:
        reply = error_reply(request, 429, "too many requests pending; retry later")
        self._reply(identity, self._counted(request, reply, status=429), qos)

    def _counted(self, request: kp1_topic.Kp1Topic, reply: Reply | None, *, status: int | None = None) -> Reply | None:
        """Counts an answered 1/KP request by extension, resource and status (`none`: no request id)."""
        if status is None:
            status = reply.status if reply is not None else None
        code = "none" if status is None else str(status)
        self._services.metrics.kp1_requests[(request.extension, _resource(request), code)] += 1
        return reply

    def _reply(self, identity: DeviceIdentity, reply: Reply | None, qos: int) -> None:
        """Through the router, in the requester's tenant: only its sessions holding the request's token
        may receive it (another tenant may have a device of the same name)."""
        if reply is not None:
            self._router.route(reply.topic, reply.payload, qos, tenant=identity.tenant_id)


def _resource(request: kp1_topic.Kp1Topic) -> str:
    """The request's resource as a metric label: a known one, or `(unknown)` (never the client's path)."""
    path, extension = request.path, request.extension
    if extension == cep.EXTENSION:  # /command/<type>, /result/<type>: the type is the device's to choose
        levels = path.split("/")
        return f"/{levels[1]}" if len(levels) > 2 and levels[1] in ("command", "result") else "(unknown)"
    if extension == cmp.EXTENSION:
        known = path in (cmp.CONFIG, cmp.APPLIED)
    elif extension == dcp.EXTENSION:
        known = path == dcp.RESOURCE
    else:  # 10/EPMP, under its configured extension name
        known = path in RESOURCES
    return path if known else "(unknown)"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
