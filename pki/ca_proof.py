"""Proof that whoever uploads a CA holds its key, as AWS IoT's registration code: the gateway gives
each tenant a registration code, and the upload carries a verification certificate whose subject CN
is that code, signed by the CA's key. Without it, anyone with a CA's certificate (public: every
device presents its chain) could make it a trust anchor of their own tenant, before its owner does,
and own the devices it issues. The certificate is made on the operator's machine
(`sign_verification_cert`, what `mqtt-gateway ca add --key` runs: the key never leaves it) and
checked on the gateway (`proven_code`)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from .certs import CertificateRejected, cert_sha256, load_certificates, subject_cn

VERIFICATION_VALIDITY = dt.timedelta(hours=1)
BACKDATE = dt.timedelta(minutes=5)
"""A verification certificate starts this early, for a gateway whose clock is a little behind."""
SIGNING_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
"""Not DSA: a DSA CA is refused (pki/certs.py), and cryptography >= 51 warns at every use of its names."""


class KeyEncrypted(ValueError):
    """The key file needs its passphrase."""


def load_signing_key(data: bytes, passphrase: bytes | None = None) -> CertificateIssuerPrivateKeyTypes:
    """A CA's private key (PEM, or DER), to sign the verification certificate with. Raises
    KeyEncrypted when it needs a passphrase, ValueError when it is not a key that signs."""
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        key = loader(data, passphrase)
    except TypeError:  # encrypted and no passphrase (or a passphrase for a key without one)
        if passphrase is None:
            raise KeyEncrypted("the key is encrypted: its passphrase is needed") from None
        raise ValueError("the key is not encrypted, yet a passphrase was given") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a private key, or a wrong passphrase ({exc})") from None
    if not isinstance(key, SIGNING_KEYS):
        raise ValueError(f"a {type(key).__name__} cannot sign certificates")
    return key


def key_matches(cert: x509.Certificate, key: CertificateIssuerPrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    return mine == cert.public_key().public_bytes(serialization.Encoding.DER, spki)


def sign_verification_cert(
    ca_cert: x509.Certificate, ca_key: CertificateIssuerPrivateKeyTypes, code: str, *, now: dt.datetime | None = None
) -> x509.Certificate:
    """The verification certificate over `code`: subject CN = the code, issued and signed by the CA,
    for a throw-away key of its own, valid for an hour. ValueError when `ca_key` is not the CA's."""
    if not key_matches(ca_cert, ca_key):
        raise ValueError("the key is not the CA certificate's key")
    now = now or dt.datetime.now(dt.UTC)
    subject_key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca_cert.subject)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VERIFICATION_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    digest = None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    return builder.sign(ca_key, digest)


def proven_code(ca: x509.Certificate, verification: str | bytes, *, now: dt.datetime | None = None) -> str:
    """The registration code that `verification` proves the CA's key signed: its subject CN (the
    registry compares it with the tenant's). Raises CertificateRejected with the reason."""
    try:
        certs = load_certificates(verification)
    except CertificateRejected as exc:
        raise CertificateRejected(f"the verification certificate: {exc}") from None
    if len(certs) != 1:
        raise CertificateRejected(f"send one verification certificate, not {len(certs)}")
    proof = certs[0]
    if cert_sha256(proof) == cert_sha256(ca):
        raise CertificateRejected("the verification certificate is the CA itself: sign a new one with the CA's key")
    if proof.issuer != ca.subject:
        raise CertificateRejected("the verification certificate's issuer is not the CA: sign it with the CA's key")
    try:
        proof.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateRejected(
            "the verification certificate was not signed by the CA's key (its signature does not verify with the"
            " CA's public key)"
        ) from None
    now = now or dt.datetime.now(dt.UTC)
    if proof.not_valid_after_utc <= now:
        raise CertificateRejected(f"the verification certificate expired on {proof.not_valid_after_utc.isoformat()}")
    if proof.not_valid_before_utc > now:
        raise CertificateRejected(
            f"the verification certificate is not valid before {proof.not_valid_before_utc.isoformat()}"
        )
    code = subject_cn(proof)
    if not code:
        raise CertificateRejected("the verification certificate has no subject CN: it must be the registration code")
    return code
