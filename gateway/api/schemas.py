"""Request and response bodies: camelCase JSON, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from pki.templates import DEFAULT_AUTH_ID_TEMPLATE, DEFAULT_DEVICE_ID_TEMPLATE
from registry.identifiers import APP_VERSION_PATTERN, AUTH_ID_PATTERN, ID_PATTERN, TOKEN_PATTERN
from registry.models import (
    AuditEntry,
    Command,
    CommandState,
    ConnectionStatus,
    Credential,
    CredentialState,
    Device,
    DeviceState,
    EndpointFilter,
    EndpointFilterState,
    FilterMember,
    Group,
    ImportJob,
    ImportRowError,
    ImportState,
    Tenant,
    TrustedCa,
)

from ..services.commands import result_message
from ..services.data import RESERVED_EXTENSIONS

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
AppVersion = Annotated[str, StringConstraints(pattern=APP_VERSION_PATTERN)]
Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]
AuthId = Annotated[str, StringConstraints(pattern=AUTH_ID_PATTERN)]
AttrKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
AttrValue = Annotated[str, StringConstraints(max_length=1024)]
Attributes = Annotated[dict[AttrKey, AttrValue], Field(max_length=64)]
# Every integer the API stores is bounded well inside SQLite's 64-bit INTEGER: beyond it, 500.
MaxDevices = Annotated[int, Field(ge=0, le=10**9)]
RatePerMinute = Annotated[int, Field(ge=1, le=1_000_000)]
ExtensionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]
ForwardExtensions = Annotated[list[ExtensionName], Field(max_length=16)]


def _forwardable(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    reserved = sorted(set(value) & RESERVED_EXTENSIONS)
    if reserved:
        raise ValueError(f"{', '.join(reserved)} handled by the gateway itself; cannot be forwarded")
    if len(set(value)) != len(value):
        raise ValueError("an extension is listed twice")
    return value


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


RETAINED_LIMITS = ("max_retained_messages", "max_retained_bytes")
MaxRetainedMessages = Annotated[
    int, Field(ge=0, le=100_000_000, description="retained messages its devices may leave on a node")
]
MaxRetainedBytes = Annotated[int, Field(ge=0, le=2**40, description="their topic and payload bytes on a node")]


class TenantIn(Body):
    id: Id
    max_devices: MaxDevices | None = None
    max_connections: int | None = Field(None, ge=0, le=10_000_000)
    max_retained_messages: MaxRetainedMessages | None = None
    max_retained_bytes: MaxRetainedBytes | None = None
    forward_extensions: ForwardExtensions | None = Field(
        None, description="1/KP extensions (besides dcx) whose device publishes reach the tenant's applications"
    )

    _forwardable = field_validator("forward_extensions")(_forwardable)


class TenantPatch(Body):
    enabled: bool | None = None
    max_devices: MaxDevices | None = None
    max_connections: int | None = Field(None, ge=0, le=10_000_000)
    max_retained_messages: MaxRetainedMessages | None = None
    max_retained_bytes: MaxRetainedBytes | None = None
    forward_extensions: ForwardExtensions | None = None

    _forwardable = field_validator("forward_extensions")(_forwardable)


class TenantOut(Body):
    id: str
    enabled: bool
    max_devices: int | None
    max_connections: int | None
    max_retained_messages: int | None
    max_retained_bytes: int | None
    forward_extensions: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            enabled=t.enabled,
            max_devices=t.max_devices,
            max_connections=t.max_connections,
            max_retained_messages=t.max_retained_messages,
            max_retained_bytes=t.max_retained_bytes,
            forward_extensions=t.forward_extensions,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )


class DeviceIn(Body):
    id: Id
    group: Id = "default"
    app_version: AppVersion | None = None
    attributes: Attributes = Field(default_factory=dict)


class DevicePatch(Body):
    group: Id | None = None
    app_version: AppVersion | None = None
    attributes: Attributes | None = None
    enabled: bool | None = None
    state: DeviceState | None = Field(None, description="an operator transition: provisioned -> registered")


class HistoryEntryOut(Body):
    at: datetime
    event: str
    detail: dict[str, Any]


class DeviceTombstoneOut(Body):
    id: str
    group: str
    app_version: str | None
    deleted_at: datetime


class DeviceOut(Body):
    id: str
    tenant: str
    group: str
    app_version: str | None
    attributes: dict[str, str]
    state: DeviceState
    enabled: bool
    auto_provisioned: bool
    created_at: datetime
    updated_at: datetime
    config_applied: str | None = Field(description="the group policy (config id) it last applied")
    config_assigned: str | None = Field(description="its group's current config id")
    policy_pending: bool = Field(description="its group's current policy is not the one it applied")
    config_error: dict[str, Any] | None = Field(description="its last failed apply")

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            tenant=d.tenant_id,
            group=d.group,
            app_version=d.app_version,
            attributes=d.attributes,
            state=d.state,
            enabled=d.enabled,
            auto_provisioned=d.auto_provisioned,
            created_at=d.created_at,
            updated_at=d.updated_at,
            config_applied=d.config_applied,
            config_assigned=d.config_assigned,
            policy_pending=d.policy_pending,
            config_error=d.config_error,
        )


class DevicePageOut(Body):
    devices: list[DeviceOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")


class TokenIn(Body):
    token: Token | None = None


class StateIn(Body):
    state: CredentialState


class TokenOut(Body):
    token: str
    device: str
    state: CredentialState
    certificate_bound: bool
    """True for a token auto-provisioning (or an import) made: it names the device in topics but
    authenticates a CONNECT only together with the device's certificate."""
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> TokenOut:
        return cls(
            token=c.auth_id,
            device=c.device_id,
            state=c.state,
            certificate_bound=c.certificate_bound,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )


class CertificateOut(Body):
    """An X.509 credential: the certificate's SHA-256 fingerprint, the CA it came through, its state."""

    fingerprint: str
    device: str
    ca_id: str | None
    auth_id: str | None
    state: CredentialState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> CertificateOut:
        return cls(
            fingerprint=c.auth_id,
            device=c.device_id,
            ca_id=c.ca_id,
            auth_id=c.label,
            state=c.state,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )


class PasswordIn(Body):
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class PasswordOut(Body):
    auth_id: str
    username: str
    state: CredentialState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, c: Credential) -> PasswordOut:
        return cls(
            auth_id=c.auth_id,
            username=f"{c.auth_id}@{c.tenant_id}",
            state=c.state,
            created_at=c.created_at,
            updated_at=c.updated_at,
            last_used_at=c.last_used_at,
        )


class LogEntryOut(Body):
    at: datetime
    event: str
    reason: str | None
    detail: str | None
    client_id: str | None
    remote_address: str | None
    node: str | None


class ConnectionOut(Body):
    connected: bool
    sessions: int
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    remote_address: str | None
    node: str | None
    log: list[LogEntryOut]

    @classmethod
    def of(cls, s: ConnectionStatus) -> ConnectionOut:
        return cls(
            connected=s.connected,
            sessions=s.sessions,
            last_connected_at=s.last_connected_at,
            last_disconnected_at=s.last_disconnected_at,
            remote_address=s.remote_address,
            node=s.node,
            log=[LogEntryOut(**e.model_dump()) for e in s.log],
        )


class ErrorOut(Body):
    error: str
    message: str
    field: str | None = None


Template = Annotated[str, StringConstraints(min_length=1, max_length=256)]
CertText = Annotated[str, StringConstraints(min_length=1, max_length=262_144)]


class TrustedCaIn(Body):
    cert: CertText
    verification_cert: CertText | None = Field(
        None, description="proof of the CA's key: a certificate over the tenant's registration code, signed by it"
    )
    waive_proof: bool = Field(False, description="trust it without proof of its key (the admin only; audited)")
    enabled: bool = True
    auto_provisioning_enabled: bool = False
    device_id_template: Template = DEFAULT_DEVICE_ID_TEMPLATE
    auth_id_template: Template = DEFAULT_AUTH_ID_TEMPLATE
    group: Id = "default"
    app_version: AppVersion | None = None
    provisioning_rate_per_minute: RatePerMinute | None = None


class TrustedCaPatch(Body):
    """Absent fields stay as they are. Null clears appVersion and provisioningRatePerMinute; the
    other settings have no "unset", so null is refused for them."""

    enabled: bool | None = None
    auto_provisioning_enabled: bool | None = None
    device_id_template: Template | None = None
    auth_id_template: Template | None = None
    group: Id | None = None
    app_version: AppVersion | None = None
    provisioning_rate_per_minute: RatePerMinute | None = None

    @field_validator("enabled", "auto_provisioning_enabled", "device_id_template", "auth_id_template", "group")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class TrustedCaOut(Body):
    id: str
    tenant: str
    subject_dn: str
    spki_sha256: str
    cert_sha256: str
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
    proof: str = Field(description="verified | waived | unproven (uploaded before proofs were required)")
    cert: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, ca: TrustedCa) -> TrustedCaOut:
        return cls(
            id=ca.id,
            tenant=ca.tenant_id,
            subject_dn=ca.subject_dn,
            spki_sha256=ca.spki_sha256,
            cert_sha256=ca.cert_sha256,
            key_algorithm=ca.key_algorithm,
            not_before=ca.not_before,
            not_after=ca.not_after,
            enabled=ca.enabled,
            auto_provisioning_enabled=ca.auto_provisioning_enabled,
            device_id_template=ca.device_id_template,
            auth_id_template=ca.auth_id_template,
            group=ca.group,
            app_version=ca.app_version,
            provisioning_rate_per_minute=ca.provisioning_rate_per_minute,
            proof=ca.proof.value,
            cert=ca.pem,
            created_at=ca.created_at,
            updated_at=ca.updated_at,
        )


class CertificateCheckIn(Body):
    cert: CertText


class CertificateFacts(Body):
    subject_dn: str
    issuer_dn: str
    fingerprint: str
    not_before: datetime
    not_after: datetime


class MatchedCa(Body):
    id: str
    subject_dn: str
    auto_provisioning_enabled: bool
    proof: str = Field(description="how its upload proved its key: verified | waived | unproven")


class CertificateCheckOut(Body):
    """What the certificate would get on its next CONNECT. Nothing is written."""

    certificate: CertificateFacts
    matched_ca: MatchedCa | None
    chain_valid: bool
    decision: str
    reason: str | None
    detail: str | None
    device_id: str | None
    auth_id: str | None
    existing_device: bool


class TombstoneOut(Body):
    fingerprint: str
    device_id: str
    ca_id: str | None
    deleted_at: datetime


class ServiceAccountIn(Body):
    id: AuthId


class ServiceAccountOut(Body):
    id: str
    username: str
    password: str | None


class ConnectedDeviceOut(Body):
    id: str
    sessions: int
    node: str
    connected_since: datetime


class ConnectedDevicesOut(Body):
    devices: list[ConnectedDeviceOut]
    next: str | None
    """Pass as `after` for the next page; null on the last page."""


class CommandIn(Body):
    payload: Any = Field(None, description="any JSON value, handed to the device as it is")
    timeout_ms: int = Field(30_000, ge=1_000, le=300_000, description="the command expires unanswered after this")


class CommandAccepted(Body):
    id: int
    state: CommandState


class CommandResultOut(Body):
    """A finished command: the device's status code, reason and result payload (504 when it expired)."""

    id: int
    state: CommandState
    status_code: int | None
    reason_phrase: str | None
    payload: Any

    @classmethod
    def of(cls, c: Command) -> CommandResultOut:
        return cls(**result_message(c))


class CommandOut(Body):
    id: int
    type: str
    state: CommandState
    status_code: int | None
    reason_phrase: str | None
    payload: Any
    """The device's result payload."""
    command_payload: Any
    origin: str
    created_at: datetime
    deadline: datetime
    delivered_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, c: Command) -> CommandOut:
        return cls(
            id=c.id,
            type=c.type,
            state=c.state,
            status_code=c.status_code,
            reason_phrase=c.reason_phrase,
            payload=c.result,
            command_payload=c.payload,
            origin=c.origin,
            created_at=c.created_at,
            deadline=c.deadline,
            delivered_at=c.delivered_at,
            completed_at=c.completed_at,
        )


class LastDataOut(Body):
    endpoint_id: str
    app_version_name: str
    received_at: datetime = Field(description="when the gateway took the message, ISO 8601 UTC (as every REST time)")
    received_at_ms: int = Field(
        description="the same instant in ms since the epoch, as `receivedAt` in the MQTT messages to applications"
    )
    sample: Any
    """The last sample of the device's last data message."""
    messages: int
    """Data messages accepted from the device since this node started (or since its entry was evicted)."""
    samples: int


class GroupIn(Body):
    id: Id
    description: str = Field("", max_length=1024)


class GroupPatch(Body):
    id: Id | None = Field(None, description="a new id: the group's devices and CAs follow")
    description: str | None = Field(None, max_length=1024)


class GroupOut(Body):
    id: str
    description: str
    config_id: str
    devices: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, g: Group) -> GroupOut:
        return cls(
            id=g.id,
            description=g.description,
            config_id=g.config_id,
            devices=g.devices,
            created_at=g.created_at,
            updated_at=g.updated_at,
        )


class GroupMoveIn(Body):
    devices: list[Id] = Field(min_length=1, max_length=10_000)


class GroupMoveOut(Body):
    moved: list[str]


class PolicyOut(Body):
    config_id: str
    config: dict[str, Any]

    @classmethod
    def of(cls, g: Group) -> PolicyOut:
        return cls(config_id=g.config_id, config=g.config)


class ImportAccepted(Body):
    job_id: str
    state: ImportState
    total: int


class ImportRowErrorOut(Body):
    row: int
    device_id: str | None
    message: str


class ImportJobOut(Body):
    job_id: str
    state: ImportState
    total: int
    processed: int
    created: int
    unchanged: int
    failed: int
    password_rows: int = Field(description="rows with a password: they run at the argon2 hash rate")
    message: str | None
    tokens: str = Field(description="none | available (GET .../tokens, once) | downloaded")
    errors: list[ImportRowErrorOut]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: ImportJob, errors: list[ImportRowError]) -> ImportJobOut:
        return cls(
            job_id=job.id,
            state=job.state,
            total=job.total,
            processed=job.processed,
            created=job.created,
            unchanged=job.unchanged,
            failed=job.failed,
            password_rows=job.password_rows,
            message=job.message,
            tokens=job.tokens,
            errors=[ImportRowErrorOut(row=e.row, device_id=e.device_id, message=e.message) for e in errors],
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
        )


class EndpointFilterIn(Body):
    id: Id
    query: dict[str, Any] = Field(
        description="fields group, state, enabled, connected, appVersion, attr.<key>, metadata.<key>;"
        " operators $eq $ne $in $nin $exists $gt $gte $lt $lte; $and / $or (docs/fleet.md)",
        examples=[{"metadata.city": "Kyiv", "connected": True, "appVersion": {"$in": ["v1", "v2"]}}],
    )


class EndpointFilterQueryIn(Body):
    query: dict[str, Any]


class EndpointFilterOut(Body):
    id: str
    query: dict[str, Any]
    state: EndpointFilterState = Field(description="pending while its first scan runs, then active")
    matching: int = Field(description="devices in it now (while pending: found so far)")
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None

    @classmethod
    def of(cls, f: EndpointFilter) -> EndpointFilterOut:
        return cls(
            id=f.id,
            query=f.query,
            state=f.state,
            matching=f.matching,
            created_at=f.created_at,
            updated_at=f.updated_at,
            activated_at=f.activated_at,
        )


class FilterEndpointOut(Body):
    endpoint_id: str
    app_version_name: str | None
    matched_at: datetime

    @classmethod
    def of(cls, m: FilterMember) -> FilterEndpointOut:
        return cls(endpoint_id=m.endpoint_id, app_version_name=m.app_version, matched_at=m.matched_at)


class FilterEndpointsOut(Body):
    state: EndpointFilterState = Field(description="pending: the list is not complete yet")
    endpoints: list[FilterEndpointOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")


class AuditEntryOut(Body):
    id: int
    at: datetime
    actor: str = Field(description="admin:<digest of the admin token>, service:<account>@<tenant> or anonymous")
    action: str = Field(description='the operation, as "METHOD /path/{template}"')
    tenant: str | None
    target: str
    status: int
    detail: str | None

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            tenant=e.tenant_id,
            target=e.target,
            status=e.status,
            detail=e.detail,
        )


class AuditPageOut(Body):
    entries: list[AuditEntryOut]
    next: int | None = Field(description="pass as `after` for the next page; null on the last")

    @classmethod
    def of(cls, entries: list[AuditEntry], limit: int) -> AuditPageOut:
        return cls(
            entries=[AuditEntryOut.of(e) for e in entries], next=entries[-1].id if len(entries) == limit else None
        )
