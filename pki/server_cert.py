"""A server certificate the operator brings (`tls_cert_file`, `tls_key_file`): checked before it is
used, at start and on every SIGHUP, so a bad file is one clear line and never a half-working TLS port."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class ServerCertificateError(Exception):
    """The files cannot serve TLS; the message says which and why."""


@dataclass(frozen=True)
class ServerCertificate:
    cert_path: Path
    key_path: Path
    names: list[str]
    """Its subjectAltName DNS names and IP addresses: what devices may dial."""
    not_after: dt.datetime


def check_server_certificate(cert_path: Path, key_path: Path, now: dt.datetime | None = None) -> ServerCertificate:
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as exc:
        raise ServerCertificateError(f"cannot read {exc.filename}: {exc.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ServerCertificateError(f"{cert_path}: no PEM certificate in it") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ServerCertificateError(f"{key_path}: the key is encrypted; give it unencrypted (mode 0600)") from None
    except ValueError:
        raise ServerCertificateError(f"{key_path}: no PEM private key in it") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise ServerCertificateError(f"{key_path} is not the key of the certificate in {cert_path}")
    now = now or dt.datetime.now(dt.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ServerCertificateError(f"{cert_path}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    if leaf.not_valid_before_utc > now:
        raise ServerCertificateError(f"{cert_path}: the certificate is not valid before {leaf.not_valid_before_utc}")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ServerCertificateError(f"{cert_path}: no subjectAltName: devices could not check its name") from None
    names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    try:  # what OpenSSL will be asked to do with them
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ServerCertificateError(f"{cert_path}: OpenSSL refuses it: {exc.reason or exc}") from None
    return ServerCertificate(cert_path, key_path, names, leaf.not_valid_after_utc)
