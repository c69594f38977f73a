"""Typed records the registry hands out. Timestamps are timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class CredentialKind(StrEnum):
    TOKEN = "token"
    PASSWORD = "password"
    X509 = "x509"


class CredentialState(StrEnum):
    INACTIVE = "inactive"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"

    @property
    def usable(self) -> bool:
        return self in (CredentialState.INACTIVE, CredentialState.ACTIVE)


# Kaa CM states; our decision adds suspended -> revoked and inactive -> suspended|revoked.
ALLOWED_TRANSITIONS: dict[CredentialState, frozenset[CredentialState]] = {
    CredentialState.INACTIVE: frozenset({CredentialState.ACTIVE, CredentialState.SUSPENDED, CredentialState.REVOKED}),
    CredentialState.ACTIVE: frozenset({CredentialState.SUSPENDED, CredentialState.REVOKED}),
    CredentialState.SUSPENDED: frozenset({CredentialState.ACTIVE, CredentialState.REVOKED}),
    CredentialState.REVOKED: frozenset(),
}


class DeviceState(StrEnum):
    ENROLLED = "enrolled"
    REGISTERED = "registered"
    PROVISIONED = "provisioned"
    DELETED = "deleted"


class CommandState(StrEnum):
    PENDING = "pending"
    """Invoked, not yet sent to the device."""
    DELIVERED = "delivered"
    """Sent to the device (pushed, or in its answer to a command request); no result yet."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def outstanding(self) -> bool:
        return self in (CommandState.PENDING, CommandState.DELIVERED)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Tenant(Record):
    id: str
    enabled: bool
    max_devices: int | None
    max_connections: int | None
    max_retained_messages: int | None = None
    max_retained_bytes: int | None = None
    forward_extensions: list[str] = []
    created_at: datetime
    updated_at: datetime


class Device(Record):
    tenant_id: str
    id: str
    group: str
    app_version: str | None
    attributes: dict[str, str]
    state: DeviceState
    enabled: bool
    auto_provisioned: bool
    created_at: datetime
    updated_at: datetime
    config_applied: str | None = None
    """The group policy (config id) the device last applied with a 2xx status (7/CMP)."""
    config_assigned: str | None = None
    """Its group's current config id (read with the device)."""
    config_error: dict[str, Any] | None = None
    """Its last failed apply: {"configId", "statusCode", "reasonPhrase", "at"}."""

    @property
    def policy_pending(self) -> bool:
        """Its group's current policy differs from the one it applied."""
        return self.config_assigned is not None and self.config_assigned != self.config_applied


class Group(Record):
    tenant_id: str
    id: str
    description: str
    config: dict[str, Any]
    """The group's policy, a JSON object, delivered to its devices by 7/CMP."""
    config_id: str
    devices: int
    created_at: datetime
    updated_at: datetime


class AuditEntry(Record):
    id: int
    at: datetime
    actor: str
    action: str
    tenant_id: str | None
    target: str
    status: int
    detail: str | None


class AuditRefusal(Record):
    """Refused (or unauthenticated) writes of one source, actor and status in one minute: a count, and
    what the first of them tried."""

    id: int
    minute: datetime
    source: str
    actor: str
    status: int
    count: int
    tenant_id: str | None
    action: str
    target: str
    detail: str | None


class EndpointFilterState(StrEnum):
    PENDING = "pending"
    """Saved; its first scan over the tenant's devices is running. No endpoint events yet."""
    ACTIVE = "active"
    """Its member list is complete and kept up to date; endpoint/matched|unmatched flow."""


class EndpointFilter(Record):
    tenant_id: str
    id: str
    query: dict[str, Any]
    state: EndpointFilterState
    matching: int
    """Devices in it now (while pending: found so far)."""
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None


class FilterMember(Record):
    endpoint_id: str
    app_version: str | None
    matched_at: datetime


class HistoryEntry(Record):
    at: datetime
    event: str
    detail: dict[str, Any]


class DeviceTombstone(Record):
    tenant_id: str
    device_id: str
    group: str
    app_version: str | None
    deleted_at: datetime


class ImportState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def open(self) -> bool:
        return self in (ImportState.QUEUED, ImportState.RUNNING)


class ImportJob(Record):
    id: str
    tenant_id: str
    state: ImportState
    total: int
    processed: int
    created: int
    unchanged: int
    failed: int
    password_rows: int
    message: str | None
    tokens: str
    """none | available (a one-time download of the generated tokens) | downloaded"""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ImportRowError(Record):
    row: int
    device_id: str | None
    message: str


class Command(Record):
    """An 11/CEP command: `payload` and `result` are any JSON value."""

    tenant_id: str
    device_id: str
    type: str
    id: int
    payload: Any
    state: CommandState
    status_code: int | None
    reason_phrase: str | None
    result: Any
    origin: str
    """`api`, or `service:<account id>` for an application's MQTT invocation."""
    created_at: datetime
    deadline: datetime
    delivered_at: datetime | None
    completed_at: datetime | None


class Credential(Record):
    """A credential as operators see it: never carries a secret or a hash."""

    tenant_id: str
    device_id: str
    kind: CredentialKind
    auth_id: str
    state: CredentialState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    certificate_bound: bool = False
    """A token that names the device but authenticates only with the device's certificate."""
    ca_id: str | None = None
    label: str | None = None


class AuthRecord(Record):
    """What the CONNECT path needs about one credential, read in one indexed query."""

    credential_id: int
    tenant_id: str
    device_id: str
    kind: CredentialKind
    auth_id: str
    secret: str | None
    state: CredentialState
    device_enabled: bool
    device_state: DeviceState
    tenant_enabled: bool
    app_version: str | None
    ca_id: str | None = None
    label: str | None = None
    certificate_bound: bool = False
    version: int = 0
    """The credential row's updated_at (ms): recording the session re-checks it is unchanged."""
    tenant_max_connections: int | None = None
    tenant_max_retained_messages: int | None = None
    tenant_max_retained_bytes: int | None = None


class CaProof(StrEnum):
    """How a trusted CA's upload proved that its uploader holds the CA's key."""

    VERIFIED = "verified"
    WAIVED = "waived"
    UNPROVEN = "unproven"
    """Uploaded before proofs were required."""


class RegistrationCode(Record):
    """What a tenant's verification certificates are issued over (subject CN)."""

    tenant_id: str
    code: str
    created_at: datetime


class TrustedCa(Record):
    id: str
    tenant_id: str
    subject_dn: str
    spki_sha256: str
    cert_sha256: str
    pem: str
    key_algorithm: str
    not_before: datetime
    not_after: datetime
    enabled: bool
    auto_provisioning_enabled: bool
    device_id_template: str
    auth_id_template: str
    group: str
    app_version: str | None
    provisioning_rate_per_minute: int | None
    created_at: datetime
    updated_at: datetime
    proof: CaProof = CaProof.UNPROVEN


class Tombstone(Record):
    tenant_id: str
    fingerprint: str
    device_id: str
    ca_id: str | None
    deleted_at: datetime


class ConnectionLogEntry(Record):
    at: datetime
    event: str
    reason: str | None
    detail: str | None
    client_id: str | None
    remote_address: str | None
    node: str | None


class ConnectionStatus(Record):
    tenant_id: str
    device_id: str
    connected: bool
    sessions: int
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    remote_address: str | None
    node: str | None
    log: list[ConnectionLogEntry]


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def from_ms_or_none(value: int | None) -> datetime | None:
    return None if value is None else from_ms(value)


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
