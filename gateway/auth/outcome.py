"""What an authentication attempt ends in. Refusal reasons are logged and counted, never sent."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from registry.models import AuthRecord, CredentialState, DeviceState

from .identity import DeviceIdentity


class Refusal(StrEnum):
    NO_USERNAME = "no_username"
    MALFORMED_USERNAME = "malformed_username"
    PASSWORD_WITH_TOKEN = "password_with_token"
    CERTIFICATE_REQUIRED = "certificate_required"
    UNKNOWN_CREDENTIAL = "unknown_credential"
    BAD_PASSWORD = "bad_password"
    CREDENTIAL_SUSPENDED = "credential_suspended"
    CREDENTIAL_REVOKED = "credential_revoked"
    DEVICE_DISABLED = "device_disabled"
    DEVICE_DELETED = "device_deleted"
    TENANT_DISABLED = "tenant_disabled"
    WILL_TOPIC_DENIED = "will_topic_denied"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    SESSION_REVOKED = "revoked_during_connect"
    # guessing (gateway/auth/throttle.py) and the argon2 queue
    THROTTLED = "auth_throttled"
    AUTH_BUSY = "auth_busy"
    # certificates
    UNKNOWN_CA = "unknown_ca"
    CERTIFICATE_INVALID = "certificate_invalid"
    CERTIFICATE_UNREADABLE = "certificate_unreadable"
    UNKNOWN_CERTIFICATE = "unknown_certificate"
    CA_TENANT_MISMATCH = "ca_tenant_mismatch"
    CREDENTIAL_MISMATCH = "credential_mismatch"
    # auto-provisioning
    DELETED = "deleted"
    DEVICE_QUOTA = "device_quota"
    PROVISIONING_RATE = "provisioning_rate_limited"
    INVALID_TEMPLATE_RESULT = "invalid_template_result"
    DEVICE_ID_TAKEN = "device_id_taken"
    DEVICE_ID_DELETED = "device_id_deleted"
    TOKEN_TAKEN = "token_taken"
    PROVISIONING_CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    identity: DeviceIdentity | None = None
    refusal: Refusal | None = None
    tenant_id: str | None = None
    device_id: str | None = None
    provisioned: bool = False
    """This CONNECT auto-provisioned the device."""

    @classmethod
    def refuse(cls, reason: Refusal, record: AuthRecord | None = None) -> AuthOutcome:
        return cls(
            refusal=reason,
            tenant_id=record.tenant_id if record else None,
            device_id=record.device_id if record else None,
        )


def state_refusal(record: AuthRecord) -> Refusal | None:
    """The checks every credential kind shares, outermost first."""
    if not record.tenant_enabled:
        return Refusal.TENANT_DISABLED
    if record.device_state == DeviceState.DELETED:
        return Refusal.DEVICE_DELETED
    if not record.device_enabled:
        return Refusal.DEVICE_DISABLED
    if record.state == CredentialState.SUSPENDED:
        return Refusal.CREDENTIAL_SUSPENDED
    if record.state == CredentialState.REVOKED:
        return Refusal.CREDENTIAL_REVOKED
    return None
