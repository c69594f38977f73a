"""Trusted CAs' bodies, the dry run of a device certificate, tombstones (api/trusted_cas.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from pki.templates import DEFAULT_AUTH_ID_TEMPLATE, DEFAULT_DEVICE_ID_TEMPLATE
from registry.models import RegistrationCode, TrustedCa

from .base import AppVersion, Body, Id, RatePerMinute

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


class RegistrationCodeOut(Body):
    registration_code: str
    created_at: datetime

    @classmethod
    def of(cls, code: RegistrationCode) -> RegistrationCodeOut:
        return cls(registration_code=code.code, created_at=code.created_at)
