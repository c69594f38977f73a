"""Where a publish goes: the subscription index, each session's bounded delivery, retained messages.

The broker hands every publish here (devices' own, wills, 10/EPMP replies); nothing here waits on a
client: `route` only queues, and each session's sender does the writing (delivery.py).
Every delivery passes the RECEIVE check of the topic ACL, decided from memory.

Each tenant is a topic space of its own: subscriptions and retained messages are kept per tenant,
and a publish is routed within one tenant, the publisher's (a device topic) or the one its topic
names (`$gateway/<root>/<tenant>/...`). A device's topics are named by its tokens, and a token bound
to its device (its device id) is unique only within its tenant, so `kp1/v1/epmx/kettle-1/...` may be
two tenants' topics at once: neither ever reaches the other's sessions.

A retained message over a limit (its device's, its tenant's, the node's) is still routed and
acknowledged, but not kept: counted in `limitsHit` by limit, and logged (`retained_refused`) once per
tenant and limit for a burst, with a count of the rest a minute later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..auth.identity import DeviceIdentity, identity_of, owner_key
from ..node.settings import GatewaySettings
from ..ops.audit import BurstLog, topic_hint
from ..ops.metrics import Metrics
from ..services.topics import tenant_of_gateway_topic
from .amqtt_api import Action
from .delivery import Delivery, DeliveryLimits
from .qos import Outgoing
from .retained import Retained, RetainedLimits, RetainedStore, TenantBudget
from .subscriptions import TenantSubscriptions, valid_filter

SUBSCRIBE_FAILURE = 0x80
# One trie node per filter level: a 65,535-byte filter of '/' would be 65,000 nodes (~26 MB).
MAX_FILTER_LEVELS = 32
MAX_FILTER_BYTES = 1024

Allowed = Callable[[Any, str, Action], bool]
"""The topic ACL: (session, topic, action) -> allowed."""


class Router:
    def __init__(self, settings: GatewaySettings, metrics: Metrics, allowed: Allowed) -> None:
        self._settings = settings
        self._metrics = metrics
        self._allowed = allowed
        self.index = TenantSubscriptions()
        self.retained = RetainedStore(
            RetainedLimits(
                per_owner=settings.max_retained_per_device,
                per_owner_bytes=settings.max_retained_bytes_per_device,
                total=settings.max_retained_messages,
                total_bytes=settings.max_retained_bytes,
                tenant_share=settings.tenant_retained_share,
            )
        )
        self._retained_refused = BurstLog("retained_refused", level=logging.WARNING)
        self._limits = DeliveryLimits(
            max_messages=settings.max_queued_messages,
            max_bytes=settings.max_queued_bytes,
            max_inflight=settings.max_inflight_messages,
        )
        self._targets: dict[str, tuple[Any, Delivery]] = {}

    # -- sessions ---------------------------------------------------------------------------------------

    def delivery(self, key: str, session: Any, *, on_slow: Callable[[], None]) -> Delivery:
        """The session's delivery: kept (with what it queued) for a resumed persistent session, new
        otherwise."""
        persistent = not session.clean_session
        current = self._targets.get(key)
        if current is not None and persistent and current[1].persistent:
            delivery = current[1]
        else:
            if current is not None:
                current[1].detach()
            delivery = Delivery(self._limits, self._metrics, persistent=persistent, on_slow=on_slow)
        self._targets[key] = (session, delivery)
        return delivery

    def delivery_of(self, key: str) -> Delivery | None:
        target = self._targets.get(key)
        return None if target is None else target[1]

    def drop(self, key: str) -> None:
        """The session is gone: its subscriptions and queue with it."""
        self.index.remove_session(key)
        target = self._targets.pop(key, None)
        if target is not None:
            target[1].detach()

    # -- subscriptions ----------------------------------------------------------------------------------

    def subscribe(self, key: str, session: Any, topic_filter: str, qos: int) -> int:
        """The SUBACK return code for one filter: the granted QoS, or 0x80."""
        if len(topic_filter) > MAX_FILTER_BYTES or topic_filter.count("/") >= MAX_FILTER_LEVELS:
            self._metrics.limits_hit["max_filter_size"] += 1
            return SUBSCRIBE_FAILURE
        identity = identity_of(session)
        if identity is None or not valid_filter(topic_filter):
            return SUBSCRIBE_FAILURE
        if not self._allowed(session, topic_filter, Action.SUBSCRIBE):
            return SUBSCRIBE_FAILURE
        held = self.index.filters_of(key)
        if topic_filter not in held and len(held) >= self._settings.max_subscriptions_per_session:
            self._metrics.limits_hit["max_subscriptions_per_session"] += 1
            return SUBSCRIBE_FAILURE
        granted = min(qos, 2)
        self.index.add(identity.tenant_id, key, topic_filter, granted)
        return granted

    def unsubscribe(self, key: str, topic_filter: str) -> bool:
        return self.index.remove(key, topic_filter)

    # -- publishing -------------------------------------------------------------------------------------

    def route(self, topic: str, data: bytes, qos: int, *, tenant: str | None = None, droppable: bool = False) -> int:
        """Queues the message once for every session of the tenant subscribed to `topic` and allowed to
        receive it, at the lower of the publish QoS and the subscription's. Returns how many got it.
        `tenant`: the publisher's, for a device topic; a `$gateway/...` topic names its own."""
        scope = tenant if tenant is not None else tenant_of_gateway_topic(topic)
        if scope is None:  # no topic space to route in: nobody may receive it
            return 0
        # one copy per session, at the highest QoS its matching filters granted: overlapping filters
        # (100 per session allowed) must not multiply a publish 100-fold
        reached = 0
        for key, granted in self.index.subscribers(scope, topic).items():
            target = self._targets.get(key)
            if target is None or not self._receives(target[0], scope, topic):
                continue
            target[1].offer(Outgoing(topic, data, min(qos, granted), droppable=droppable))
            reached += 1
        return reached

    def deliver(self, key: str, topic: str, data: bytes, qos: int) -> bool:
        """Queues the message for one session, if it is subscribed to `topic` and may receive it (a
        reply meant for one connection of a device, such as a pushed command)."""
        target, tenant = self._targets.get(key), self.index.tenant_of(key)
        if target is None or tenant is None:
            return False
        granted = self.index.subscribers(tenant, topic).get(key)
        if granted is None or not self._receives(target[0], tenant, topic):
            return False
        target[1].offer(Outgoing(topic, data, min(qos, granted)))
        return True

    def retain(self, source: Any, topic: str, data: bytes, qos: int) -> None:
        """Kept in the publisher's tenant (only a session with an identity publishes)."""
        identity = identity_of(source)
        if identity is None:
            return
        budget = TenantBudget(identity.tenant_max_retained_messages, identity.tenant_max_retained_bytes)
        refused = self.retained.put(
            Retained(topic, data, qos, owner_key(identity), identity.tenant_id, identity), budget
        )
        if refused is None:
            return
        self._metrics.limits_hit[refused] += 1
        self._retained_refused.note(
            f"{identity.tenant_id} {refused}",
            tenant=identity.tenant_id,
            device=identity.device_id,
            limit=refused,
            topic=topic_hint(topic, identity.tokens),
            bytes=len(topic) + len(data),
        )

    def replay_retained(self, key: str, topic_filter: str, qos: int) -> None:
        """A new subscription gets the retained messages it matches, through the RECEIVE check."""
        target = self._targets.get(key)
        if target is None:
            return
        session, delivery = target
        identity = identity_of(session)
        if identity is None:
            return
        for message in self.retained.matching(identity.tenant_id, topic_filter):
            if self._receives(session, identity.tenant_id, message.topic):
                delivery.offer(Outgoing(message.topic, message.data, min(qos, message.qos), retain=True))

    def forget_retained(self, match: Callable[[DeviceIdentity], bool]) -> int:
        return self.retained.forget(lambda m: m.source is not None and match(m.source))

    def _receives(self, session: Any, tenant: str, topic: str) -> bool:
        """The RECEIVE check, within the message's tenant: the indexes are per tenant already, and this
        says so again where a message is handed to a session."""
        identity = identity_of(session)
        return identity is not None and identity.tenant_id == tenant and self._allowed(session, topic, Action.RECEIVE)
