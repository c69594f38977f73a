"""The development CA and the TLS server certificate the gateway serves on first start.

Made once into `<data-dir>/tls/` and reused, so `mosquitto_pub --cafile <data-dir>/tls/ca.pem`
keeps working across restarts. A server certificate that no longer matches the CA, or is about
to expire, is reissued from the same CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import write_private, write_public

log = logging.getLogger(__name__)

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class ServerTls:
    ca_path: Path | None
    """The development CA devices trust; None for a certificate the operator brought."""
    cert_path: Path
    key_path: Path


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mqtt-gateway"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_server_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hostnames: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def issue_device_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, days: int = 365
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A device (client) certificate: EC P-256, CA:FALSE, clientAuth."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_ca(directory: Path, cn: str) -> Path:
    """`mqtt-gateway pki create-ca`: DIR/ca.pem and DIR/ca.key (0600)."""
    cert, key = create_ca(cn)
    write_private(directory / "ca.key", _key_pem(key))
    write_public(directory / "ca.pem", _pem(cert))
    return directory / "ca.pem"


def write_device_cert(directory: Path, common_name: str) -> tuple[Path, Path]:
    """`mqtt-gateway pki issue`: DIR/<CN>.pem and DIR/<CN>.key signed by DIR/ca.pem."""
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    loaded = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / 'ca.key'} is not an EC private key")
    cert, key = issue_device_cert(ca_cert, loaded, common_name)
    cert_path, key_path = directory / f"{common_name}.pem", directory / f"{common_name}.key"
    write_private(key_path, _key_pem(key))
    write_public(cert_path, _pem(cert))
    return cert_path, key_path


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_server_tls(tls_dir: Path, hostnames: list[str], *, reissue: bool = False) -> ServerTls:
    """Loads the development CA and server certificate from `tls_dir`, creating what is missing, and
    a new server certificate when the one there does not cover `hostnames` (or `reissue`)."""
    ca_path = tls_dir / "ca.pem"
    paths = ServerTls(ca_path, tls_dir / "server.pem", tls_dir / "server.key")
    ca_key_path = tls_dir / "ca.key"
    if ca_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path} is not an EC private key")
        ca_key = loaded
    else:
        ca_cert, ca_key = create_ca("mqtt-gateway development CA")
        write_private(ca_key_path, _key_pem(ca_key))
        write_public(ca_path, _pem(ca_cert))
        paths.cert_path.unlink(missing_ok=True)
        log.info("created development CA %s", ca_path)
    if reissue or not _server_cert_usable(paths, ca_cert, hostnames):
        cert, key = issue_server_cert(ca_cert, ca_key, hostnames)
        write_private(paths.key_path, _key_pem(key))
        write_public(paths.cert_path, _pem(cert))
        log.info("issued server certificate %s for %s", paths.cert_path, ", ".join(hostnames))
    return paths


def _server_cert_usable(paths: ServerTls, ca_cert: x509.Certificate, hostnames: list[str]) -> bool:
    if not (paths.cert_path.exists() and paths.key_path.exists()):
        return False
    cert = x509.load_pem_x509_certificate(paths.cert_path.read_bytes())
    if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound):
        return False
    present = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return all(h in present for h in hostnames)
