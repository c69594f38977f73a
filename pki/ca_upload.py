"""Validating a CA a tenant uploads: what it is, and every reason to refuse it (the API's 400s)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from .certs import (
    CertificateRejected,
    cert_sha256,
    key_description,
    load_certificates,
    pem,
    spki_sha256,
    weak_key_reason,
)


@dataclass(frozen=True)
class ParsedCa:
    cert: x509.Certificate
    chain: list[x509.Certificate]
    subject_dn: str
    spki_sha256: str
    cert_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_algorithm: str

    @property
    def pem_bundle(self) -> str:
        return "".join(pem(c) for c in [self.cert, *self.chain])


def _ca_problem(cert: x509.Certificate, what: str) -> str | None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{what} is not a CA certificate (no basicConstraints)"
    if not bc.ca:
        return f"{what} is not a CA certificate (basicConstraints CA:FALSE)"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return f"{what} has no keyUsage extension, so no keyCertSign"
    if not ku.key_cert_sign:
        return f"{what} may not sign certificates (keyUsage without keyCertSign)"
    return weak_key_reason(cert)


def parse_ca(data: str | bytes, *, now: dt.datetime | None = None) -> ParsedCa:
    """The first certificate is the trust anchor; any others are its issuers (kept for reference).
    Raises CertificateRejected with the reason."""
    certs = load_certificates(data)
    now = now or dt.datetime.now(dt.UTC)
    ca, chain = certs[0], certs[1:]
    if (problem := _ca_problem(ca, "the certificate")) is not None:
        raise CertificateRejected(problem)
    if ca.not_valid_after_utc <= now:
        raise CertificateRejected(f"the CA certificate expired on {ca.not_valid_after_utc.isoformat()}")
    if ca.not_valid_before_utc > now:
        raise CertificateRejected(f"the CA certificate is not valid before {ca.not_valid_before_utc.isoformat()}")
    _check_chain(ca, chain)
    return ParsedCa(
        cert=ca,
        chain=chain,
        subject_dn=ca.subject.rfc4514_string(),
        spki_sha256=spki_sha256(ca),
        cert_sha256=cert_sha256(ca),
        not_before=ca.not_valid_before_utc,
        not_after=ca.not_valid_after_utc,
        key_algorithm=key_description(ca),
    )


def _check_chain(ca: x509.Certificate, chain: list[x509.Certificate]) -> None:
    """Each further certificate must issue the one before it, and never repeat (no loops)."""
    seen = {cert_sha256(ca)}
    current = ca
    for index, issuer in enumerate(chain, start=1):
        fingerprint = cert_sha256(issuer)
        if fingerprint in seen:
            raise CertificateRejected(f"chain certificate {index} repeats an earlier one (a chain loop)")
        seen.add(fingerprint)
        if (problem := _ca_problem(issuer, f"chain certificate {index}")) is not None:
            raise CertificateRejected(problem)
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature too
            raise CertificateRejected(f"chain certificate {index} did not issue the one before it ({exc})") from None
        current = issuer


__all__ = ["CertificateRejected", "ParsedCa", "parse_ca"]
