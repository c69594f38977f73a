"""What the broker's plugins and the management API share: settings, registry, hasher, throttle, counters."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from registry import Registry

from ..auth.hashing import PasswordHasher
from ..auth.recent import RecentLogins
from ..auth.throttle import AuthThrottle
from ..kp1.budget import ValidationBudget
from ..ops.audit import BurstLog
from ..ops.metrics import Metrics
from ..ops.refusals import RefusalTally
from .settings import GatewaySettings
from .trust import TrustedCas

if TYPE_CHECKING:
    from ..kp1.epmp import Epmp
    from ..services.commands.service import CommandService
    from ..services.data import DataCollection
    from ..services.policies import PolicyService


@dataclass
class GatewayServices:
    settings: GatewaySettings
    registry: Registry
    hasher: PasswordHasher
    metrics: Metrics
    trust: TrustedCas | None = None
    epmp: Epmp | None = None
    data: DataCollection | None = None
    commands: CommandService | None = None
    policies: PolicyService | None = None
    throttle: AuthThrottle = field(init=False)
    """Failed-CONNECT budgets per username and address, sized by the settings."""
    validation: ValidationBudget = field(init=False)
    """What parsing its payloads may cost each device, service account and tenant."""
    recent_logins: RecentLogins = field(init=False, default_factory=RecentLogins)
    provisioned_log: BurstLog = field(init=False, default_factory=lambda: BurstLog("device_auto_provisioned"))
    """Per tenant: a wave of new devices is a line and a count, not a line per device."""
    dropped_log: BurstLog = field(
        init=False, default_factory=lambda: BurstLog("requests_dropped", level=logging.WARNING)
    )
    """Per device: 1/KP requests refused over `epmp_max_pending`."""
    refusals: RefusalTally = field(init=False)
    """Unauthenticated API writes and refused MQTT invocations: counted per source and minute."""
    throttled_log: BurstLog = field(
        init=False, default_factory=lambda: BurstLog("connect_refused", level=logging.WARNING)
    )
    """Per address: CONNECTs refused `auth_throttled` (a line for the first, then a count)."""

    def __post_init__(self) -> None:
        self.throttle = AuthThrottle.of(self.settings)
        self.refusals = RefusalTally(
            self.registry,
            self.metrics,
            sources_per_minute=self.settings.audit_refusal_sources_per_minute,
            max_field_chars=self.settings.audit_max_field_chars,
        )
        self.validation = ValidationBudget(self.settings, self.metrics)


def services_of(context: Any) -> GatewayServices | None:
    """The services `mqtt-gateway serve` hands its plugins on their context (GatewayContext); None in
    a stock amqtt broker, where a plugin opens its own (gateway/node/stock.py)."""
    services = getattr(context, "services", None)
    return services if isinstance(services, GatewayServices) else None
