"""Topic authorization: every PUBLISH, SUBSCRIBE and delivery decided from the session's identity.

No I/O here: RECEIVE is checked for every subscriber on every delivery (by our router, and by a
stock amqtt broker inside its one broadcast loop), so a decision must be a dictionary lookup and a
string split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..kp1.topic import device_may_use
from ..mqtt.amqtt_api import Action, BaseTopicPlugin, Session
from ..ops.audit import audit, audit_enabled, topic_hint
from ..services.topics import service_may_use
from .identity import identity_of


def decide(session: Session | None, topic: str | None, action: Action) -> bool:
    identity = identity_of(session)
    if identity is None or not topic:
        return False
    if identity.is_service:  # reads below its tenant's `$gateway/...` roots, publishes command invocations
        return service_may_use(identity.tenant_id, topic, publish=action == Action.PUBLISH)
    return device_may_use(identity.tokens, topic)


class TopicAccessPlugin(BaseTopicPlugin):
    """The amqtt topic plugin. GatewayBroker calls `allowed` directly (amqtt would wrap each call
    in a task); `topic_filtering` keeps the plugin usable in a stock broker too."""

    @dataclass
    class Config:
        pass

    def allowed(self, session: Session | None, topic: str | None, action: Action) -> bool:
        ok = decide(session, topic, action)
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
        return action is not None and self.allowed(session, topic, action)
