"""Parsing certificates and the facts we key on: fingerprints, subject fields, key strength."""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID, PublicKeyAlgorithmOID

MAX_CERT_BYTES = 16_384  # DER; real device and CA certificates are 0.5-2 KB


class CertificateRejected(ValueError):
    """The input is not an acceptable certificate; the message says why, for the API's 400."""


def load_certificates(data: str | bytes) -> list[x509.Certificate]:
    """PEM (one or more certificates) or DER (raw, or base64 text). Raises CertificateRejected."""
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        if b"-----BEGIN CERTIFICATE-----" not in raw:
            raise CertificateRejected("PEM does not contain a CERTIFICATE block")
        try:
            certs = x509.load_pem_x509_certificates(raw)
        except ValueError as exc:
            raise CertificateRejected(f"unreadable PEM certificate: {exc}") from None
    else:
        der = raw
        if raw[:1] != b"\x30":  # not DER: maybe base64 of DER
            try:
                der = base64.b64decode(raw, validate=False)
            except (binascii.Error, ValueError):
                raise CertificateRejected("neither PEM nor DER") from None
        try:
            certs = [x509.load_der_x509_certificate(der)]
        except ValueError:
            raise CertificateRejected("neither a PEM nor a DER certificate") from None
    for cert in certs:
        if len(cert.public_bytes(serialization.Encoding.DER)) > MAX_CERT_BYTES:
            raise CertificateRejected(f"certificate larger than {MAX_CERT_BYTES} bytes")
    return certs


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cert_sha256(cert: x509.Certificate) -> str:
    """The certificate fingerprint: SHA-256 of the DER, lower-case hex."""
    return hashlib.sha256(der(cert)).hexdigest()


def spki_sha256(cert: x509.Certificate) -> str:
    """Identifies a CA by its key, not its name: SHA-256 of the SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def subject_field(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def subject_cn(cert: x509.Certificate) -> str:
    return subject_field(cert, NameOID.COMMON_NAME)


def is_dsa(cert: x509.Certificate) -> bool:
    """By the key's algorithm OID, before its key is loaded: cryptography >= 51 warns on every use of
    its `dsa` module's names (once per CA upload, through an isinstance check for another key) and on
    loading a DSA key."""
    return cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.DSA


def key_description(cert: x509.Certificate) -> str:
    if is_dsa(cert):
        return "DSA"
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC-{key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def weak_key_reason(cert: x509.Certificate) -> str | None:
    if is_dsa(cert):
        return "weak key: DSA is not accepted"
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"weak key: RSA {key.key_size} bits (at least 2048 required)"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        return f"weak key: EC {key.curve.name} (at least 256 bits required)"
    return None
