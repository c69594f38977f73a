"""Where a publish goes: the subscription index, each session's bounded delivery, retained messages.

The broker hands every publish here (devices' own, wills, 10/EPMP replies); nothing here waits on a
client: `route` only queues, and each session's sender does the writing (delivery.py).
Every delivery passes the RECEIVE check of the topic ACL, decided from memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..auth.identity import DeviceIdentity, identity_of, owner_key
from ..node.settings import GatewaySettings
from ..ops.metrics import Metrics
from .amqtt_api import Action
from .delivery import Delivery, DeliveryLimits
from .qos import Outgoing
from .retained import Retained, RetainedLimits, RetainedStore
from .subscriptions import SubscriptionIndex, valid_filter

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
        self.index = SubscriptionIndex()
        self.retained = RetainedStore(
            RetainedLimits(
                per_owner=settings.max_retained_per_device,
                per_owner_bytes=settings.max_retained_bytes_per_device,
                total=settings.max_retained_messages,
                total_bytes=settings.max_retained_bytes,
            )
        )
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
        if not valid_filter(topic_filter) or not self._allowed(session, topic_filter, Action.SUBSCRIBE):
            return SUBSCRIBE_FAILURE
        held = self.index.filters_of(key)
        if topic_filter not in held and len(held) >= self._settings.max_subscriptions_per_session:
            self._metrics.limits_hit["max_subscriptions_per_session"] += 1
            return SUBSCRIBE_FAILURE
        granted = min(qos, 2)
        self.index.add(key, topic_filter, granted)
        return granted

    def unsubscribe(self, key: str, topic_filter: str) -> bool:
        return self.index.remove(key, topic_filter)

    # -- publishing -------------------------------------------------------------------------------------

    def route(self, topic: str, data: bytes, qos: int, *, droppable: bool = False) -> int:
        """Queues the message once for every session subscribed to `topic` and allowed to receive it,
        at the lower of the publish QoS and the subscription's. Returns how many got it."""
        # one copy per session, at the highest QoS its matching filters granted: overlapping filters
        # (100 per session allowed) must not multiply a publish 100-fold
        reached = 0
        for key, granted in self.index.subscribers(topic).items():
            target = self._targets.get(key)
            if target is None or not self._allowed(target[0], topic, Action.RECEIVE):
                continue
            target[1].offer(Outgoing(topic, data, min(qos, granted), droppable=droppable))
            reached += 1
        return reached

    def deliver(self, key: str, topic: str, data: bytes, qos: int) -> bool:
        """Queues the message for one session, if it is subscribed to `topic` and may receive it (a
        reply meant for one connection of a device, such as a pushed command)."""
        target = self._targets.get(key)
        granted = self.index.subscribers(topic).get(key)
        if target is None or granted is None or not self._allowed(target[0], topic, Action.RECEIVE):
            return False
        target[1].offer(Outgoing(topic, data, min(qos, granted)))
        return True

    def retain(self, source: Any, topic: str, data: bytes, qos: int) -> None:
        identity = identity_of(source)
        owner = owner_key(identity) if identity is not None else ""
        refused = self.retained.put(Retained(topic, data, qos, owner, identity))
        if refused is not None:
            self._metrics.limits_hit[refused] += 1

    def replay_retained(self, key: str, topic_filter: str, qos: int) -> None:
        """A new subscription gets the retained messages it matches, through the RECEIVE check."""
        target = self._targets.get(key)
        if target is None:
            return
        session, delivery = target
        for message in self.retained.matching(topic_filter):
            if self._allowed(session, message.topic, Action.RECEIVE):
                delivery.offer(Outgoing(message.topic, message.data, min(qos, message.qos), retain=True))

    def forget_retained(self, match: Callable[[DeviceIdentity], bool]) -> int:
        return self.retained.forget(lambda m: m.source is not None and match(m.source))
