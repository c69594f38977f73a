"""Group policies delivered by 7/CMP: a device gets its group's configuration on request, and pushed
when it observes (the default once it subscribes to `.../cmx/<token>/config/json/status`) whenever the
policy changes or the device moves to another group. Its `applied` reports are kept in the registry;
the first successful one for its group's current policy makes it `provisioned`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from registry import Registry
from registry.errors import Conflict, NotFound

from ..auth.identity import DeviceIdentity
from ..kp1 import cmp
from ..kp1.budget import ValidationBudget
from ..kp1.reply import Kp1Error, Reply, answered, status_reply
from ..kp1.topic import Kp1Topic, topics_matched
from ..node.settings import GatewaySettings
from .reach import Reach

if TYPE_CHECKING:
    from ..mqtt.session import ClientSession

log = logging.getLogger(__name__)

UNOBSERVED_ATTR = "gateway.cmx_unobserved"
"""Set on a session that asked `{"observe": false}`: no pushes until it asks `{"observe": true}`."""


def config_message(config_id: str, config_json: str) -> bytes:
    return b'{"configId":"' + config_id.encode() + b'","config":' + config_json.encode() + b"}"


class PolicyService:
    def __init__(
        self, registry: Registry, settings: GatewaySettings, reach: Reach, validation: ValidationBudget
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._reach = reach
        self._validation = validation

    # -- devices (kp1/<app version>/cmx/<token>/...) -----------------------------------------------------

    async def device_request(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply | None:
        return await answered(request, self._serve(session, identity, request, payload), "7/CMP")

    async def _serve(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply | None:
        if request.path == cmp.CONFIG:
            return await self._config(session, identity, request, payload)
        if request.path == cmp.APPLIED:
            applied = cmp.parse_applied(payload, self._settings, self._validation.reader(identity, cmp.EXTENSION))
            try:
                await self._registry.groups.record_applied(
                    identity.tenant_id,
                    identity.device_id,
                    applied.config_id,
                    applied.status_code,
                    applied.reason_phrase,
                    node=self._settings.node_id,
                )
            except Conflict as exc:
                raise Kp1Error(409, exc.message) from None
            return status_reply(request)
        raise Kp1Error(404, f"unknown resource {request.path or '(empty)'!r}: {cmp.CONFIG} or {cmp.APPLIED}")

    async def _config(
        self, session: ClientSession, identity: DeviceIdentity, request: Kp1Topic, payload: bytes
    ) -> Reply:
        """Always answered (without a request id on `.../config/json/status`, where pushes arrive):
        `{"configId","config"}`, or `{}` when the device already has the current one."""
        asked = cmp.parse_config_request(payload, self._settings, self._validation.reader(identity, cmp.EXTENSION))
        if asked.observe is not None:
            session.attributes[UNOBSERVED_ATTR] = not asked.observe
        config_id, config_json = await self._registry.groups.device_config(identity.tenant_id, identity.device_id)
        body = b"{}" if asked.config_id == config_id else config_message(config_id, config_json)
        return Reply(request.topic + "/status", body)

    # -- pushes ------------------------------------------------------------------------------------------------

    @staticmethod
    def carries_config(filters: Iterable[str]) -> bool:
        return any(True for _ in topics_matched(filters, cmp.EXTENSION, cmp.PUSH_REST))

    async def push_to(self, session: ClientSession, identity: DeviceIdentity, filters: list[str]) -> None:
        """To one session that just started listening on `filters` (a new subscription, a resumed
        session): once, on those filters only."""
        config_id, config_json = await self._registry.groups.device_config(identity.tenant_id, identity.device_id)
        self._deliver(session, config_message(config_id, config_json), filters)

    async def policy_changed(self, tenant_id: str, device_ids: Iterable[str]) -> int:
        """After a policy change or a move: each device's connected, observing sessions on this node get
        its group's policy. Returns the sessions reached."""
        reached = 0
        for device_id in device_ids:
            sessions = self._reach.sessions_of(tenant_id, device_id)
            if not sessions:
                continue
            try:
                config_id, config_json = await self._registry.groups.device_config(tenant_id, device_id)
            except NotFound:  # deleted meanwhile
                continue
            message = config_message(config_id, config_json)
            reached += sum(self._deliver(session, message) for session in sessions)
        return reached

    def _deliver(self, session: ClientSession, message: bytes, filters: Iterable[str] | None = None) -> bool:
        """One copy per session, on the first status topic its filters (or `filters`) match: a device
        holding that topic under many app versions does not multiply what it is sent."""
        if session.attributes.get(UNOBSERVED_ATTR):
            return False
        held = self._reach.subscriptions_of(session) if filters is None else filters
        topics = topics_matched(held, cmp.EXTENSION, cmp.PUSH_REST)
        return any(self._reach.deliver(session, topic, message, 1) for topic in topics)  # once: the first taker
