"""What an application's MQTT command invocations may cost the gateway's disk: each service account
has a rate (`commands_per_minute`, `commands_burst`; beyond it a 429 goes out on the result topic like
any other refusal), an invocation that made a command is one audit entry with bounded fields (origin
`mqtt`, kept apart from the API's entries), and a refused one is counted per account, status and
minute (gateway/ops/refusals.py), never a row each."""

from __future__ import annotations

from registry import Registry
from registry.audit import bounded

from ...auth.identity import DeviceIdentity
from ...auth.throttle import BucketMap
from ...node.settings import GatewaySettings
from ...ops.audit import MAX_TOPIC_HINT, audit
from ...ops.metrics import Metrics
from ...ops.refusals import RefusalTally

ACTION = "MQTT $gateway/commands/{tenant}/{device}/{type}"
RATE_LIMIT = "commands_per_minute"


def actor_of(service: DeviceIdentity) -> str:
    return f"service:{service.device_id}@{service.tenant_id}"


class InvocationAudit:
    def __init__(self, registry: Registry, settings: GatewaySettings, metrics: Metrics, refusals: RefusalTally) -> None:
        self._registry = registry
        self._metrics = metrics
        self._refusals = refusals
        self.per_minute = settings.commands_per_minute
        self._rates = BucketMap(RATE_LIMIT, settings.commands_burst, settings.commands_per_minute)

    def admit(self, service: DeviceIdentity) -> bool:
        """Takes one invocation from the account's budget; False (and counted) when it is spent."""
        if self._rates.take(actor_of(service)):
            return True
        self._metrics.limits_hit[RATE_LIMIT] += 1
        return False

    async def record(self, service: DeviceIdentity, topic: str, status: int, detail: str | None) -> None:
        actor = actor_of(service)
        if status >= 400:
            self._refusals.note(
                "mqtt",
                source=actor,
                actor=actor,
                status=status,
                tenant_id=service.tenant_id,
                action=ACTION,
                target=topic,
                detail=detail,
            )
            return
        audit(
            "mqtt_write",
            tenant=service.tenant_id,
            actor=actor,
            action=ACTION,
            target=bounded(topic, MAX_TOPIC_HINT),
            status=status,
        )
        await self._registry.audit.record(
            actor=actor, action=ACTION, tenant_id=service.tenant_id, target=topic, status=status, origin="mqtt"
        )
