"""What the broker does with a client's PUBLISH, SUBSCRIBE and UNSUBSCRIBE: authorize it, then route
it, or answer it when it is a request to a gateway extension (10/EPMP over 1/KP).

Nothing here reads the registry on the publish path; a 10/EPMP request is the one exception by
design, and it runs in its own task, in arrival order per device.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable

from ..identity import DeviceIdentity, identity_of, owner_key
from ..keyed_lock import KeyedLock
from ..kp1 import topic as kp1_topic
from ..kp1.epmp import RESOURCES, Epmp
from ..services import GatewayServices
from .amqtt_api import Action
from .codec import Publish
from .connection import CloseReason, Connection
from .router import Allowed, Router
from .session import ClientSession

log = logging.getLogger(__name__)


class Inbound:
    def __init__(self, services: GatewayServices, router: Router, allowed: Allowed) -> None:
        self._services = services
        self._router = router
        self._allowed = allowed
        self._device_order = KeyedLock()  # 10/EPMP requests of one device, in arrival order
        self._epmp_pending: Counter[str] = Counter()  # per device, whichever of its connections sent them
        self.epmp_tasks: set[asyncio.Task[None]] = set()

    def epmp_pending(self, owner: str) -> int:
        return self._epmp_pending[owner]

    # -- PUBLISH -------------------------------------------------------------------------------------------

    def received(self, connection: Connection, publish: Publish) -> Awaitable[None] | None:
        """Routed at once (in the order the client sent them); a 10/EPMP request returns the future of
        its commit, which its acknowledgement waits for."""
        session, topic = connection.session, publish.topic
        if topic.startswith("$"):  # [MQTT-4.7.2-1]: `$` topics are the gateway's
            # the topic is not echoed into the logs: it may hold an endpoint token
            connection.close(CloseReason.PROTOCOL_ERROR, "PUBLISH to a '$' topic")
            return None
        if not self._allowed(session, topic, Action.PUBLISH):
            return None
        epmp = self._services.epmp
        if epmp is not None and topic.startswith("kp1/"):
            request = kp1_topic.parse(topic)
            if request is not None and request.extension == self._services.settings.epmp_extension:
                return self._submit_epmp(epmp, session, request, publish.data, publish.qos)
        self._router.route(topic, publish.data, publish.qos)
        if publish.retain:
            self._router.retain(session, topic, publish.data, publish.qos)
        return None

    def publish_will(self, session: ClientSession) -> None:
        """An abnormal end: the will goes out like a publish of the device (its topic passed the ACL
        at CONNECT)."""
        if not session.will_flag or not session.will_topic:
            return
        data = session.will_message or b""
        self._router.route(session.will_topic, data, session.will_qos)
        if session.will_retain:
            self._router.retain(session, session.will_topic, data, session.will_qos)

    # -- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------------------------------------------

    def subscribe(self, session: ClientSession, topic_filter: str, qos: int) -> int:
        return self._router.subscribe(session.key, session, topic_filter, qos)

    def subscribed(self, session: ClientSession, granted: list[tuple[str, int]]) -> None:
        for topic_filter, qos in granted:
            self._router.replay_retained(session.key, topic_filter, qos)

    def unsubscribe(self, session: ClientSession, topic_filter: str) -> None:
        self._router.unsubscribe(session.key, topic_filter)

    # -- 10/EPMP ---------------------------------------------------------------------------------------------

    def _submit_epmp(
        self, epmp: Epmp, session: ClientSession, request: kp1_topic.Kp1Topic, payload: bytes, qos: int
    ) -> Awaitable[None] | None:
        """A device's requests are answered in the order they arrived, whichever of its sessions sent
        them, so a read sees an earlier write even from another connection. At most `epmp_max_pending`
        wait per device; beyond that a request is refused with `/error` 429 (when it has a request id)
        and counted, so one flood cannot starve other devices."""
        identity = identity_of(session)
        if identity is None:
            return None
        owner = owner_key(identity)
        metrics = self._services.metrics
        if self._epmp_pending[owner] >= self._services.settings.epmp_max_pending:
            metrics.epmp_dropped += 1
            metrics.limits_hit["epmp_max_pending"] += 1
            if request.request_id is not None:
                reply = epmp.error_reply(request, 429, "too many requests pending; retry later")
                self._router.route(reply.topic, reply.payload, qos)
            return None
        self._epmp_pending[owner] += 1
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._answer_epmp(epmp, identity, request, payload, qos, committed))
        self.epmp_tasks.add(task)
        task.add_done_callback(self.epmp_tasks.discard)
        return committed if qos else None

    async def _answer_epmp(
        self,
        epmp: Epmp,
        identity: DeviceIdentity,
        request: kp1_topic.Kp1Topic,
        payload: bytes,
        qos: int,
        committed: asyncio.Future[None],
    ) -> None:
        owner = owner_key(identity)
        try:
            async with self._device_order.hold(owner):
                reply = await epmp.handle(identity, request, payload)
                _resolve(committed)  # committed (or refused): now the PUBACK / PUBREC may go
                # by resource, never by the client's own path: that would be a key per request
                resource = request.path if request.path in RESOURCES else "(unknown)"
                self._services.metrics.epmp_requests[resource] += 1
                if reply is not None:
                    # Through the router: only sessions holding this token may receive it.
                    self._router.route(reply.topic, reply.payload, qos)
        finally:
            self._epmp_pending[owner] -= 1
            if self._epmp_pending[owner] <= 0:
                del self._epmp_pending[owner]
            _resolve(committed)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
