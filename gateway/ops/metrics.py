"""In-process counters the management API reports (`GET /v1/metrics`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .recent_refusals import RecentRefusals


@dataclass
class Metrics:
    connects_accepted: int = 0
    connects_refused: Counter[str] = field(default_factory=Counter)
    disconnects: Counter[str] = field(default_factory=Counter)
    publishes_denied: int = 0
    subscriptions_denied: int = 0
    sessions_kicked: int = 0
    wills_refused: int = 0
    """Wills not published: the session's credential, device, tenant or CA was revoked since CONNECT."""
    epmp_requests: Counter[str] = field(default_factory=Counter)
    epmp_dropped: int = 0
    limits_hit: Counter[str] = field(default_factory=Counter)
    """Times each configured bound was reached, by setting name (what happened is in docs/security.md)."""
    messages_dropped: int = 0
    data_messages: int = 0
    data_samples: int = 0
    data_refused: Counter[str] = field(default_factory=Counter)
    """2/DCP messages refused, by 1/KP status code."""
    data_forwarded: Counter[str] = field(default_factory=Counter)
    commands_invoked: int = 0
    commands_refused: Counter[str] = field(default_factory=Counter)
    """Invocations that made no command, by HTTP status (MQTT ones too)."""
    commands_finished: Counter[str] = field(default_factory=Counter)
    """By final state: succeeded, failed, expired."""
    auto_provisioned: int = 0
    payloads_parsed: Counter[str] = field(default_factory=Counter)
    """Device and service-account payloads that reached the JSON parser, by extension (`commands`:
    invocations): what `json_max_values` and the validation budgets bound."""
    kp1_requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """1/KP requests the gateway answers, by (extension, resource, status): status is the 1/KP code of
    the answer, `none` for a request without a request id (never answered). Resources are the known
    ones of each extension, anything else `(unknown)`: a device must not mint label values."""
    messages_in: int = 0
    """PUBLISH packets received from clients; bytes_in counts every packet's bytes."""
    bytes_in: int = 0
    messages_out: int = 0
    """PUBLISH packets written to clients; bytes_out counts every packet's bytes."""
    bytes_out: int = 0
    api_refused: Counter[str] = field(default_factory=Counter)
    """API requests without the admin token refused: `unauthenticated` (401), `rate_limited` (429)."""
    audit_counted: Counter[str] = field(default_factory=Counter)
    """Writes counted into a row of the audit trail's refusals, not a row each, by origin (api, mqtt)."""
    audit_folded: int = 0
    """Of those, counted as `(others)`: past `audit_refusal_sources_per_minute` sources in their minute."""
    audit_pruned: Counter[str] = field(default_factory=Counter)
    """Audit rows deleted over their row bound before their age (api, mqtt, refusals)."""
    recent_refusals: RecentRefusals = field(default_factory=RecentRefusals)
    """The last hour's refusals by tenant and reason (the dashboard); not in the snapshot."""

    def connect_refused(self, reason: str, tenant_id: str | None) -> None:
        self.connects_refused[reason] += 1
        self.recent_refusals.add(reason, tenant_id)

    def audit_rows_pruned(self, what: str, rows: int) -> None:
        self.audit_pruned[what] += rows

    def snapshot(self) -> dict[str, object]:
        return {
            "connectsAccepted": self.connects_accepted,
            "connectsRefused": dict(self.connects_refused),
            "disconnects": dict(self.disconnects),
            "publishesDenied": self.publishes_denied,
            "subscriptionsDenied": self.subscriptions_denied,
            "sessionsKicked": self.sessions_kicked,
            "willsRefused": self.wills_refused,
            "epmpRequests": dict(self.epmp_requests),
            "epmpDropped": self.epmp_dropped,
            "limitsHit": dict(self.limits_hit),
            "messagesDropped": self.messages_dropped,
            "dataMessages": self.data_messages,
            "dataSamples": self.data_samples,
            "dataRefused": dict(self.data_refused),
            "dataForwarded": dict(self.data_forwarded),
            "commandsInvoked": self.commands_invoked,
            "commandsRefused": dict(self.commands_refused),
            "commandsFinished": dict(self.commands_finished),
            "autoProvisioned": self.auto_provisioned,
            "payloadsParsed": dict(self.payloads_parsed),
            "kp1Requests": {"/".join(key): n for key, n in self.kp1_requests.items()},
            "messagesIn": self.messages_in,
            "bytesIn": self.bytes_in,
            "messagesOut": self.messages_out,
            "bytesOut": self.bytes_out,
            "apiRefused": dict(self.api_refused),
            "auditCounted": dict(self.audit_counted),
            "auditFolded": self.audit_folded,
            "auditPruned": dict(self.audit_pruned),
        }
