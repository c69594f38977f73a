"""X.509 client-certificate authentication, and auto-provisioning of unknown devices.

`assess` decides from reads alone what a certificate would get; the CONNECT path acts on it and
the dry-run API (`POST .../trusted-cas/check`) reports it, so both always agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from pki.certs import cert_sha256
from pki.templates import render
from pki.trust import ClientCertificateRefused
from registry import Registry
from registry.identifiers import is_valid_id
from registry.models import AuthRecord
from registry.provisioning import ProvisioningRefused, ProvisioningRequest

from ..node.trust import TrustedCas
from .identity import DeviceIdentity
from .outcome import AuthOutcome, Refusal, state_refusal


@dataclass
class Assessment:
    decision: str  # "accepted" | "provisioned" | "refused"
    refusal: Refusal | None = None
    detail: str = ""
    tenant_id: str | None = None
    ca_id: str | None = None
    fingerprint: str = ""
    device_id: str | None = None
    auth_id: str | None = None
    record: AuthRecord | None = None
    request: ProvisioningRequest | None = field(default=None, repr=False)

    def refuse(self, reason: Refusal, detail: str = "") -> Assessment:
        self.decision, self.refusal, self.detail = "refused", reason, detail
        return self


async def assess(
    registry: Registry,
    trust: TrustedCas,
    leaf: x509.Certificate,
    node: str,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
) -> Assessment:
    """What the certificate gets. A new device's registry checks (tombstone, quota, taken ids) are
    `registry.provisioning`'s alone: run in the provisioning transaction, or here as a dry run."""
    result = Assessment(decision="refused", fingerprint=cert_sha256(leaf))
    try:
        anchor = trust.store.identify_certificate(leaf, now)
    except ClientCertificateRefused as exc:
        return result.refuse(Refusal(exc.reason), exc.detail)
    result.tenant_id, result.ca_id = anchor.tenant_id, anchor.ca_id
    record = await registry.credentials.find_x509(result.fingerprint)
    if record is not None:
        result.record, result.device_id, result.auth_id = record, record.device_id, record.label
        if record.tenant_id != anchor.tenant_id or record.ca_id != anchor.ca_id:
            return result.refuse(Refusal.CA_TENANT_MISMATCH, "the certificate's device belongs to another CA")
        if (refusal := state_refusal(record)) is not None:
            return result.refuse(refusal)
        result.decision = "accepted"
        return result
    ca = trust.settings_of(anchor.ca_id)
    assert ca is not None
    result.device_id = render(ca.device_id_template, leaf)
    result.auth_id = render(ca.auth_id_template, leaf)
    if not ca.auto_provisioning_enabled:
        return result.refuse(Refusal.UNKNOWN_CERTIFICATE, "unknown certificate and the CA does not auto-provision")
    if not is_valid_id(result.device_id):
        return result.refuse(
            Refusal.INVALID_TEMPLATE_RESULT,
            f"template {ca.device_id_template!r} gives {result.device_id!r}, not a valid device id",
        )
    bucket = trust.bucket_of(ca.id)
    if bucket is not None and not bucket.available():
        return result.refuse(Refusal.PROVISIONING_RATE, f"over {ca.provisioning_rate_per_minute} provisionings/minute")
    result.request = ProvisioningRequest(
        tenant_id=anchor.tenant_id,
        ca_id=anchor.ca_id,
        fingerprint=result.fingerprint,
        device_id=result.device_id,
        auth_id=result.auth_id,
        group=ca.group,
        app_version=ca.app_version,
        attributes={"subjectDn": leaf.subject.rfc4514_string()[:1024], "provisionedBy": anchor.ca_id},
        node=node,
    )
    if dry_run:
        try:
            await registry.provisioning.check(result.request)
        except ProvisioningRefused as exc:
            return result.refuse(Refusal(exc.reason), exc.detail)
    result.decision = "provisioned"
    return result


async def authenticate_certificate(
    registry: Registry, trust: TrustedCas, leaf_der: bytes, username: str | None, node: str
) -> AuthOutcome:
    try:
        _, leaf = trust.store.identify(leaf_der)
    except ClientCertificateRefused as exc:
        return AuthOutcome.refuse(Refusal(exc.reason))
    assessment = await assess(registry, trust, leaf, node)
    if assessment.decision == "refused":
        assert assessment.refusal is not None
        return AuthOutcome(refusal=assessment.refusal, tenant_id=assessment.tenant_id, device_id=assessment.device_id)
    record = assessment.record
    # A certificate decides who the device is; a username may only repeat the device's own token,
    # and that is checked before anything is provisioned.
    if record is not None:
        tokens = await registry.credentials.usable_tokens(record.tenant_id, record.device_id)
    else:
        tokens = [(assessment.device_id, True)] if assessment.device_id else []
    if username and username not in {token for token, _bound in tokens}:
        return AuthOutcome(
            refusal=Refusal.CREDENTIAL_MISMATCH, tenant_id=assessment.tenant_id, device_id=assessment.device_id
        )
    if assessment.decision == "provisioned":
        assert assessment.request is not None and assessment.ca_id is not None
        bucket = trust.bucket_of(assessment.ca_id)
        if bucket is not None and not bucket.take():
            return AuthOutcome(refusal=Refusal.PROVISIONING_RATE, tenant_id=assessment.tenant_id)
        try:
            record, created = await registry.provisioning.provision(assessment.request)
        except ProvisioningRefused as exc:
            # token_taken: the would-be device id is another device's live token (of the same tenant:
            # bound tokens are unique per tenant, so no other tenant's token can be probed), not logged
            device_id = None if exc.reason == Refusal.TOKEN_TAKEN else assessment.device_id
            return AuthOutcome(refusal=Refusal(exc.reason), tenant_id=assessment.tenant_id, device_id=device_id)
    assert record is not None
    if assessment.decision == "provisioned":
        tokens = await registry.credentials.usable_tokens(record.tenant_id, record.device_id)
        return AuthOutcome(identity=DeviceIdentity.of(record, tokens), provisioned=created)
    return AuthOutcome(identity=DeviceIdentity.of(record, tokens))
