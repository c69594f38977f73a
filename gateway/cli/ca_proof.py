"""The proof of a CA's key that `mqtt-gateway ca add` sends: a verification certificate over the
tenant's registration code, signed here with the CA's key file (`--key`; the key never leaves this
machine: the gateway sees only the certificate), read from a file made elsewhere
(`--verification-cert`, an HSM or openssl), or waived (`--no-proof`, the admin only, audited)."""

from pathlib import Path
from typing import Any

import typer

from .client import api_path, fail, run


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}", 2) from None


def proof_fields(
    data_dir: Path | None,
    tenant_id: str,
    cert: Path,
    key: Path | None,
    verification_cert: Path | None,
    no_proof: bool,
) -> dict[str, Any]:
    """The upload's `verificationCert` or `waiveProof`; nothing when none was asked for (the gateway
    then says what to do)."""
    if sum((key is not None, verification_cert is not None, no_proof)) > 1:
        raise fail("--key, --verification-cert and --no-proof exclude each other", 2)
    if no_proof:
        return {"waiveProof": True}
    if verification_cert is not None:
        return {"verificationCert": _bytes(verification_cert).decode(errors="replace")}
    if key is None:
        return {}
    from pki.ca_proof import KeyEncrypted, key_matches, load_signing_key, sign_verification_cert
    from pki.certs import CertificateRejected, load_certificates, pem

    try:
        ca_cert = load_certificates(_bytes(cert))[0]
    except CertificateRejected as exc:
        raise fail(f"{cert}: {exc}", 2) from None
    key_data = _bytes(key)
    try:
        try:
            ca_key = load_signing_key(key_data)
        except KeyEncrypted:
            passphrase = typer.prompt(f"passphrase for {key}", hide_input=True, err=True)
            ca_key = load_signing_key(key_data, passphrase.encode())
    except ValueError as exc:
        raise fail(f"{key}: {exc}", 2) from None
    if not key_matches(ca_cert, ca_key):
        raise fail(f"{key} is not the key of {cert} (the first certificate in it)", 2)
    code = run(data_dir, "GET", api_path("/v1/tenants/{}/trusted-cas/registration-code", tenant_id))
    return {"verificationCert": pem(sign_verification_cert(ca_cert, ca_key, code["registrationCode"]))}
