"""Topic authorization: every PUBLISH, SUBSCRIBE and delivery decided from the session's identity.

No I/O here: RECEIVE is checked for every subscriber on every delivery (by our router, and by a
stock amqtt broker inside its one broadcast loop), so a decision must be a dictionary lookup and a
string split.

A device's topics are named by its tokens, and a bound token (a device id) is unique within its
tenant only: two tenants' devices may both be `kettle-1`. Our router keeps each tenant's topics apart
(gateway/mqtt/router.py), so there a session may use all its tokens. A stock amqtt broker has one topic
space for every tenant and its RECEIVE check cannot know who published, so there a session uses only
its bearer tokens, which are unique across tenants (`shared_topic_space`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..kp1.topic import device_may_use
from ..mqtt.amqtt_api import Action, BaseTopicPlugin, Session
from ..ops.audit import audit, audit_enabled, topic_hint
from ..services.topics import service_may_use
from .identity import identity_of


def decide(session: Session | None, topic: str | None, action: Action, *, shared_topic_space: bool = False) -> bool:
    identity = identity_of(session)
    if identity is None or not topic:
        return False
    if identity.is_service:  # reads below its tenant's `$gateway/...` roots, publishes command invocations
        return service_may_use(identity.tenant_id, topic, publish=action == Action.PUBLISH)
    return device_may_use(identity.bearer_tokens if shared_topic_space else identity.tokens, topic)


class TopicAccessPlugin(BaseTopicPlugin):
    """The amqtt topic plugin. GatewayBroker calls `allowed` directly (amqtt would wrap each call
    in a task); `topic_filtering` keeps the plugin usable in a stock broker too."""

    @dataclass
    class Config:
        pass

    def allowed(
        self, session: Session | None, topic: str | None, action: Action, *, shared_topic_space: bool = False
    ) -> bool:
        ok = decide(session, topic, action, shared_topic_space=shared_topic_space)
        if not ok and action != Action.RECEIVE and audit_enabled(logging.WARNING):
            identity = identity_of(session)
            audit(
                "publish_denied" if action == Action.PUBLISH else "subscribe_denied",
                logging.WARNING,
                tenant=identity.tenant_id if identity else None,
                device=identity.device_id if identity else None,
                topic=topic_hint(topic, identity.tokens if identity else ()) if topic else None,
            )
        return ok

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        # only a stock amqtt broker calls this (GatewayBroker calls `allowed`): one topic space for all tenants
        return action is not None and self.allowed(session, topic, action, shared_topic_space=True)
