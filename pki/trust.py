"""Per-tenant trust anchors for client certificates, and the TLS contexts that ask for them.

OpenSSL in the TLS handshake only checks that a client certificate chains to SOME enabled CA; the
authoritative decision is `identify`: find the one CA that issued the leaf (by subject AND
signature, so a look-alike CA with the same DN and another key gets nowhere), then verify with
`cryptography.x509.verification` against that CA alone, so a chain never crosses into another
tenant. Trust changes build a fresh SSLContext that new handshakes pick up (stdlib contexts
cannot forget a CA), so adding or removing a CA needs no restart.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from .certs import CertificateRejected, load_certificates, pem


@dataclass(frozen=True)
class TrustAnchor:
    ca_id: str
    tenant_id: str
    cert: x509.Certificate


class ClientCertificateRefused(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _require_client_auth_if_eku(policy: Any, cert: x509.Certificate, eku: Any) -> None:
    if (
        eku is not None
        and ExtendedKeyUsageOID.CLIENT_AUTH not in eku
        and (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku)
    ):
        raise ValueError("extendedKeyUsage present without clientAuth")


# The web PKI defaults, relaxed on purpose for devices: a device certificate need not carry a
# subjectAltName, and needs clientAuth only when it lists extended key usages at all.
_DEVICE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_client_auth_if_eku)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca()


def verify_client(leaf: x509.Certificate, anchor: TrustAnchor, now: dt.datetime | None = None) -> None:
    """Signature chain, validity window, CA:FALSE leaf, clientAuth when EKU is present."""
    verifier = (
        PolicyBuilder()
        .store(Store([anchor.cert]))
        .time(now or dt.datetime.now(dt.UTC))
        .max_chain_depth(2)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_DEVICE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, [])
    except VerificationError as exc:
        raise ClientCertificateRefused("certificate_invalid", str(exc)) from None


class TrustStore:
    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self._cert_path, self._key_path = cert_path, key_path
        self._by_subject: dict[bytes, list[TrustAnchor]] = {}
        self._anchors: list[TrustAnchor] = []
        self._current = self._build_context([])
        self._listener = self._build_context([])
        self._listener.sni_callback = self._pick_current

    def use_certificate(self, cert_path: Path, key_path: Path) -> None:
        """A new server certificate (SIGHUP): every handshake that starts after this call presents it;
        sessions already up keep theirs. The listener's context is changed in place (the listeners
        hold it), the per-handshake one rebuilt with the same anchors."""
        self._listener.load_cert_chain(cert_path, key_path)
        self._cert_path, self._key_path = cert_path, key_path
        self._current = self._build_context(self._anchors)

    def replace(self, anchors: list[TrustAnchor]) -> None:
        """Takes effect for every handshake that starts after this call."""
        self._anchors = list(anchors)
        by_subject: dict[bytes, list[TrustAnchor]] = defaultdict(list)
        for anchor in anchors:
            by_subject[anchor.cert.subject.public_bytes()].append(anchor)
        self._by_subject = dict(by_subject)
        self._current = self._build_context(anchors)

    @property
    def listener_context(self) -> ssl.SSLContext:
        return self._listener

    def _pick_current(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ssl_object.context = self._current

    def _build_context(self, anchors: list[TrustAnchor]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._cert_path, self._key_path)
        if anchors:
            context.load_verify_locations(cadata="".join(pem(a.cert) for a in anchors))
        # An uploaded intermediate is a trust anchor of its own: no need to reach a root. Set on every
        # context, the listener's included: a context switched in during the handshake brings its
        # certificate store, but the verify flags stay those of the listener's context.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        # Optional: token and password devices use TLS without a certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def identify(self, leaf_der: bytes, now: dt.datetime | None = None) -> tuple[TrustAnchor, x509.Certificate]:
        try:
            leaf = load_certificates(leaf_der)[0]
        except CertificateRejected as exc:
            raise ClientCertificateRefused("certificate_unreadable", str(exc)) from None
        return self.identify_certificate(leaf, now), leaf

    def identify_certificate(self, leaf: x509.Certificate, now: dt.datetime | None = None) -> TrustAnchor:
        candidates = self._by_subject.get(leaf.issuer.public_bytes(), [])
        if not candidates:
            raise ClientCertificateRefused("unknown_ca", leaf.issuer.rfc4514_string())
        issuer = None
        for anchor in candidates:
            try:
                leaf.verify_directly_issued_by(anchor.cert)
            except Exception:  # noqa: S112  (InvalidSignature, ValueError, TypeError: not this one)
                continue
            issuer = anchor
            break
        if issuer is None:
            raise ClientCertificateRefused("unknown_ca", "issuer name matches a trusted CA but its signature does not")
        verify_client(leaf, issuer, now)
        return issuer
