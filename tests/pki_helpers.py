"""Test PKI: CAs and device certificates made in the test, written where TLS clients can load them."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.node.runtime import Gateway
from pki.ca_proof import sign_verification_cert
from pki.certs import pem

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Issued(cert, key, cert_path, key_path)


def make_ca(
    directory: Path,
    cn: str,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    ca: bool = True,
    key_cert_sign: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    issuer: Issued | None = None,
    stem: str | None = None,
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    signer = issuer.key if issuer else key
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,  # type: ignore[arg-type]
        )
    return _write(directory, stem or cn.replace(" ", "_"), builder.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]


def make_device_cert(
    directory: Path,
    ca: Issued,
    cn: str,
    *,
    ca_flag: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra_bytes: int = 0,
    stem: str | None = None,
    organization: str | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,  # type: ignore[arg-type]
        )
        .add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if extra_bytes:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                b"\x04\x83" + extra_bytes.to_bytes(3, "big") + b"x" * extra_bytes,  # DER OCTET STRING
            ),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]
    return _write(directory, stem or cn.replace("/", "_"), cert, key)


def device_tls(gateway: Gateway, device: Issued | None) -> ssl.SSLContext:
    assert gateway.tls is not None
    context = ssl.create_default_context(cafile=str(gateway.tls.ca_path))
    if device is not None:
        context.load_cert_chain(device.cert_path, device.key_path)
    return context


# -- proof of a CA's key (issue 17 point 12): what `mqtt-gateway ca add --key` does ---------------------


async def registration_code(api: httpx.AsyncClient, tenant: str) -> str:
    r = await api.get(f"/v1/tenants/{tenant}/trusted-cas/registration-code")
    assert r.status_code == 200, r.text
    return str(r.json()["registrationCode"])


def verification_cert(ca: Issued, code: str, *, at: dt.datetime | None = None) -> str:
    """A verification certificate over `code`, signed by the CA's key, valid around `at` (now)."""
    return pem(sign_verification_cert(ca.cert, ca.key, code, now=at))


async def trust(
    api: httpx.AsyncClient, tenant: str, ca: Issued, bundle: str | None = None, **options: object
) -> httpx.Response:
    """POST the CA (or `bundle`, a PEM led by it) with the proof of its key, as the CLI does."""
    proof = verification_cert(ca, await registration_code(api, tenant))
    body = {"cert": bundle or ca.pem, "verificationCert": proof, **options}
    return await api.post(f"/v1/tenants/{tenant}/trusted-cas", json=body)
