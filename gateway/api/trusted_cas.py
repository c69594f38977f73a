"""/v1/tenants/{tenant}/trusted-cas, the certificate dry-run, and tombstones."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

from pki.ca_proof import proven_code
from pki.ca_upload import ParsedCa, parse_ca
from pki.certs import CertificateRejected, load_certificates
from pki.templates import template_error
from registry.errors import NotFound
from registry.models import CaProof, TrustedCa, from_ms, now_ms

from ..auth.outcome import Refusal
from ..auth.x509 import assess
from .deps import GatewayDep, bearer_token, is_admin_token
from .errors import BadRequest
from .schemas.trusted_cas import (
    CertificateCheckIn,
    CertificateCheckOut,
    CertificateFacts,
    MatchedCa,
    RegistrationCodeOut,
    TombstoneOut,
    TrustedCaIn,
    TrustedCaOut,
    TrustedCaPatch,
)

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["trusted CAs"])


def _no_proof(tenant: str) -> str:
    return (
        "proof that you hold the CA's key is required: sign a verification certificate whose subject CN is the"
        f" tenant's registration code (GET /v1/tenants/{tenant}/trusted-cas/registration-code) with the CA's key"
        f" and send it as verificationCert (`mqtt-gateway ca add {tenant} CA.pem --key CA.key` does both), or"
        " waive the proof with waiveProof: true (`--no-proof`; the admin only, and audited)"
    )


async def _proof(request: Request, tenant: str, body: TrustedCaIn, parsed: ParsedCa) -> tuple[CaProof, str | None]:
    """How this upload proves the CA's key, and the registration code it proves it over."""
    if body.waive_proof and body.verification_cert is not None:
        raise BadRequest("give either verificationCert or waiveProof, not both", "waiveProof", status=422)
    if body.waive_proof:
        if not is_admin_token(request, await bearer_token(request)):
            raise HTTPException(403, "only the admin token may trust a CA without proof of its key")
        return CaProof.WAIVED, None
    if body.verification_cert is None:
        raise BadRequest(_no_proof(tenant), "verificationCert", status=422)
    try:
        return CaProof.VERIFIED, proven_code(parsed.cert, body.verification_cert)
    except CertificateRejected as exc:
        raise BadRequest(str(exc), "verificationCert", status=422) from None


def _check_templates(body: TrustedCaIn | TrustedCaPatch) -> None:
    for field, value in (("deviceIdTemplate", body.device_id_template), ("authIdTemplate", body.auth_id_template)):
        if value is not None and (problem := template_error(value)) is not None:
            raise BadRequest(f"{field}: {problem}", field, status=422)


@router.post("/trusted-cas", summary="Trust a CA", status_code=201)
async def add_trusted_ca(tenant: str, body: TrustedCaIn, request: Request, gw: GatewayDep) -> TrustedCaOut:
    """Devices with a certificate from this CA (PEM, with its chain) authenticate for the tenant; with
    `autoProvisioningEnabled`, unknown ones are created on their first CONNECT, named by the templates.
    New TLS handshakes see it at once. The upload proves the CA's key (`verificationCert`, over the
    tenant's registration code), or the admin waives that (`waiveProof`, audited)."""
    await gw.registry.tenants.get(tenant)
    _check_templates(body)
    try:
        parsed = parse_ca(body.cert)
    except CertificateRejected as exc:
        raise BadRequest(str(exc), "cert") from None
    proof, code = await _proof(request, tenant, body, parsed)
    now = from_ms(now_ms())
    ca = await gw.manage.trusted_cas.create(
        TrustedCa(
            id="",
            tenant_id=tenant,
            subject_dn=parsed.subject_dn,
            spki_sha256=parsed.spki_sha256,
            cert_sha256=parsed.cert_sha256,
            pem=parsed.pem_bundle,
            key_algorithm=parsed.key_algorithm,
            not_before=parsed.not_before,
            not_after=parsed.not_after,
            enabled=body.enabled,
            auto_provisioning_enabled=body.auto_provisioning_enabled,
            device_id_template=body.device_id_template,
            auth_id_template=body.auth_id_template,
            group=body.group,
            app_version=body.app_version,
            provisioning_rate_per_minute=body.provisioning_rate_per_minute,
            created_at=now,
            updated_at=now,
            proof=proof,
        ),
        proven_code=code,
    )
    request.state.audit_detail = f"proof of the CA's key {proof.value}: trusted CA {ca.id}"
    return TrustedCaOut.of(ca)


@router.get("/trusted-cas", summary="List trusted CAs")
async def list_trusted_cas(tenant: str, gw: GatewayDep) -> list[TrustedCaOut]:
    """The tenant's trusted CAs and their provisioning settings."""
    return [TrustedCaOut.of(ca) for ca in await gw.registry.trusted_cas.list(tenant)]


@router.get("/trusted-cas/registration-code", summary="Get the registration code for proofs of a CA's key")
async def get_registration_code(tenant: str, gw: GatewayDep) -> RegistrationCodeOut:
    """A CA upload carries a verification certificate whose subject CN is this code, signed by the CA's
    key. The code stays until rotated (POST) or until the tenant removes a CA."""
    return RegistrationCodeOut.of(await gw.registry.trusted_cas.registration_code(tenant))


@router.post("/trusted-cas/registration-code", summary="Rotate the registration code")
async def rotate_registration_code(tenant: str, gw: GatewayDep) -> RegistrationCodeOut:
    """A new code: verification certificates made over the old one are refused from now on."""
    return RegistrationCodeOut.of(await gw.registry.trusted_cas.rotate_registration_code(tenant))


@router.post("/trusted-cas/check", summary="Check a device certificate")
async def check_certificate(tenant: str, body: CertificateCheckIn, gw: GatewayDep) -> CertificateCheckOut:
    """Dry-run: what would this device certificate get? Nothing is written, no rate token is used."""
    await gw.registry.tenants.get(tenant)
    try:
        leaf = load_certificates(body.cert)[0]
    except CertificateRejected as exc:
        raise BadRequest(str(exc), "cert") from None
    if gw.services.trust is None:
        raise HTTPException(409, "TLS is disabled on this gateway: no certificate can authenticate")
    result = await assess(gw.registry, gw.services.trust, leaf, gw.settings.node_id, dry_run=True)
    facts = CertificateFacts(
        subject_dn=leaf.subject.rfc4514_string(),
        issuer_dn=leaf.issuer.rfc4514_string(),
        fingerprint=result.fingerprint,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )
    ca = gw.services.trust.settings_of(result.ca_id) if result.ca_id else None
    if ca is not None and ca.tenant_id != tenant:
        # chains to a CA of another tenant: say so, but not whose
        return CertificateCheckOut(
            certificate=facts,
            matched_ca=None,
            chain_valid=False,
            decision="refused",
            reason=Refusal.CA_TENANT_MISMATCH.value,
            detail="the certificate chains to a CA of another tenant",
            device_id=None,
            auth_id=None,
            existing_device=False,
        )
    chain_valid = result.refusal not in (Refusal.UNKNOWN_CA, Refusal.CERTIFICATE_INVALID)
    return CertificateCheckOut(
        certificate=facts,
        matched_ca=MatchedCa(
            id=ca.id,
            subject_dn=ca.subject_dn,
            auto_provisioning_enabled=ca.auto_provisioning_enabled,
            proof=ca.proof.value,
        )
        if ca is not None
        else None,
        chain_valid=chain_valid,
        decision=result.decision,
        reason=result.refusal.value if result.refusal else None,
        detail=result.detail or None,
        device_id=result.device_id,
        auth_id=result.auth_id,
        existing_device=result.record is not None,
    )


@router.get("/trusted-cas/{ca_id}", summary="Get a trusted CA")
async def get_trusted_ca(tenant: str, ca_id: str, gw: GatewayDep) -> TrustedCaOut:
    """One trusted CA with its provisioning settings."""
    return TrustedCaOut.of(await gw.registry.trusted_cas.get(tenant, ca_id))


@router.patch("/trusted-cas/{ca_id}", summary="Change a trusted CA")
async def patch_trusted_ca(tenant: str, ca_id: str, body: TrustedCaPatch, gw: GatewayDep) -> TrustedCaOut:
    """Change its provisioning settings or disable it; absent fields stay. Disabling closes the sessions
    its certificates opened."""
    _check_templates(body)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return TrustedCaOut.of(await gw.manage.trusted_cas.update(tenant, ca_id, **changes))


@router.delete("/trusted-cas/{ca_id}", summary="Stop trusting a CA", status_code=204)
async def delete_trusted_ca(tenant: str, ca_id: str, gw: GatewayDep) -> Response:
    """Removes the CA and closes the sessions its certificates opened; the devices and their credentials stay."""
    await gw.manage.trusted_cas.delete(tenant, ca_id)
    return Response(status_code=204)


@router.get("/tombstones", summary="List certificate tombstones")
async def list_tombstones(tenant: str, gw: GatewayDep) -> list[TombstoneOut]:
    """Certificates of deleted auto-provisioned devices: they cannot provision a device again until their
    tombstone is cleared."""
    await gw.registry.tenants.get(tenant)
    return [
        TombstoneOut(fingerprint=t.fingerprint, device_id=t.device_id, ca_id=t.ca_id, deleted_at=t.deleted_at)
        for t in await gw.registry.provisioning.tombstones(tenant)
    ]


@router.delete("/tombstones/{fingerprint}", summary="Clear a certificate tombstone", status_code=204)
async def clear_tombstone(tenant: str, fingerprint: str, gw: GatewayDep) -> Response:
    """Lets the certificate with this fingerprint auto-provision a device again."""
    await gw.registry.tenants.get(tenant)
    if not await gw.registry.provisioning.clear_tombstone(tenant, fingerprint):
        raise NotFound("no tombstone for this fingerprint", field="fingerprint")
    return Response(status_code=204)
