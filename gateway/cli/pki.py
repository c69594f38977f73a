"""`mqtt-gateway ca ...` (a tenant's trusted CAs) and `mqtt-gateway pki ...` (a test PKI on disk)."""

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from .ca_proof import proof_fields
from .client import api_path, fail, run
from .options import DataDirOption, JsonOption, Tenant
from .output import show
from .typer_group import subgroup

ca = subgroup("ca", "A tenant's trusted CAs (for X.509 devices).")
ca_tombstone = subgroup("tombstone", "Certificates of deleted devices, refused until their tombstone goes.")
ca.add_typer(ca_tombstone)
pki = subgroup("pki", "A development PKI: a test CA, device certificates.")

CA_COLUMNS = ["id", "subjectDn", "enabled", "autoProvisioningEnabled", "deviceIdTemplate", "group", "proof", "notAfter"]
CaId = Annotated[str, typer.Argument(metavar="ID", help="the CA's id (`ca list`)")]
DeviceIdTemplate = Annotated[
    str | None,
    typer.Option(
        "--device-id-template", metavar="TEMPLATE", help="a provisioned device's id [default: {{subject-cn}}]"
    ),
]
AuthIdTemplate = Annotated[
    str | None,
    typer.Option("--auth-id-template", metavar="TEMPLATE", help="its certificate's auth-id [default: {{subject-dn}}]"),
]
Rate = Annotated[
    int | None, typer.Option("--rate-per-minute", metavar="N", help="auto-provisionings per minute at most")
]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}", 2) from None


@ca.command("add")
def ca_add(
    tenant_id: Tenant,
    cert: Annotated[Path, typer.Argument(metavar="CA.pem", help="the CA certificate (PEM)")],
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="CA.key", help="prove you hold the CA's key: signs the proof here, sends none"),
    ] = None,
    verification_cert: Annotated[
        Path | None,
        typer.Option(
            "--verification-cert", metavar="FILE", help="the proof made elsewhere: CN = `ca registration-code`"
        ),
    ] = None,
    no_proof: Annotated[
        bool, typer.Option("--no-proof", help="trust it without proof of its key (the admin only; audited)")
    ] = False,
    auto_provision: Annotated[bool, typer.Option("--auto-provision", help="provision unknown devices")] = False,
    device_id_template: DeviceIdTemplate = None,
    auth_id_template: AuthIdTemplate = None,
    group: Annotated[
        str | None, typer.Option("--group", metavar="GROUP", help="provisioned devices' group [default: default]")
    ] = None,
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="VERSION", help="provisioned devices' app version")
    ] = None,
    rate: Rate = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trust a CA for the tenant, proving you hold its key.

    Certificates it signed authenticate; with --auto-provision, their device is created on first CONNECT.
    The proof: --key CA.key signs a verification certificate over the tenant's registration code here
    (the key is not sent), --verification-cert gives one made elsewhere, --no-proof waives it."""
    body: dict[str, Any] = {"cert": _read(cert), "autoProvisioningEnabled": auto_provision}
    body |= proof_fields(data_dir, tenant_id, cert, key, verification_cert, no_proof)
    given = {
        "deviceIdTemplate": device_id_template,
        "authIdTemplate": auth_id_template,
        "group": group,
        "appVersion": app_version,
        "provisioningRatePerMinute": rate,
    }
    body |= {k: v for k, v in given.items() if v is not None}
    show(run(data_dir, "POST", api_path("/v1/tenants/{}/trusted-cas", tenant_id), body), as_json, CA_COLUMNS)


@ca.command("registration-code")
def ca_registration_code(
    tenant_id: Tenant,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="a new code: proofs made over the old one stop working")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The code a proof of a CA's key is made over (its verification certificate's subject CN).

    It stays until rotated, or until the tenant removes a CA."""
    path = api_path("/v1/tenants/{}/trusted-cas/registration-code", tenant_id)
    code = run(data_dir, "POST" if rotate else "GET", path)
    typer.echo(json.dumps(code, indent=2) if as_json else code["registrationCode"])


@ca.command("list")
def ca_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """The tenant's trusted CAs."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/trusted-cas", tenant_id)), as_json, CA_COLUMNS)


@ca.command("get")
def ca_get(tenant_id: Tenant, ca_id: CaId, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """One CA with its settings (the certificate itself with --json)."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/trusted-cas/{}", tenant_id, ca_id)), as_json, CA_COLUMNS)


@ca.command("update")
def ca_update(
    tenant_id: Tenant,
    ca_id: CaId,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="trust it, or stop for now")] = None,
    auto_provision: Annotated[
        bool | None, typer.Option("--auto-provision/--no-auto-provision", help="provision unknown devices, or not")
    ] = None,
    device_id_template: DeviceIdTemplate = None,
    auth_id_template: AuthIdTemplate = None,
    group: Annotated[str | None, typer.Option("--group", metavar="GROUP", help="provisioned devices' group")] = None,
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="VERSION", help="provisioned devices' app version")
    ] = None,
    clear_app_version: Annotated[bool, typer.Option("--clear-app-version", help="no app version")] = False,
    rate: Rate = None,
    no_rate: Annotated[bool, typer.Option("--no-rate-limit", help="no auto-provisioning rate limit")] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a CA's settings; what is not given stays. Disabling closes its devices' sessions."""
    if (app_version is not None and clear_app_version) or (rate is not None and no_rate):
        raise fail("an option and its --clear-/--no- form exclude each other", 2)
    given = {
        "enabled": enabled,
        "autoProvisioningEnabled": auto_provision,
        "deviceIdTemplate": device_id_template,
        "authIdTemplate": auth_id_template,
        "group": group,
        "appVersion": app_version,
        "provisioningRatePerMinute": rate,
    }
    body: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if clear_app_version:
        body["appVersion"] = None
    if no_rate:
        body["provisioningRatePerMinute"] = None
    if not body:
        raise fail("nothing to change: give at least one option (see --help)", 2)
    path = api_path("/v1/tenants/{}/trusted-cas/{}", tenant_id, ca_id)
    show(run(data_dir, "PATCH", path, body), as_json, CA_COLUMNS)


@ca.command("delete")
def ca_delete(tenant_id: Tenant, ca_id: CaId, data_dir: DataDirOption = None) -> None:
    """Stop trusting the CA; its devices' live sessions are closed."""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/trusted-cas/{}", tenant_id, ca_id))


ca.command("remove", hidden=True, help="The old name of `ca delete`.")(ca_delete)


@ca.command("check")
def ca_check(
    tenant_id: Tenant,
    cert: Annotated[Path, typer.Argument(metavar="DEVICE.pem", help="a device certificate (PEM)")],
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="accepted for scripts: the answer is JSON anyway")] = False,
) -> None:
    """Dry-run a device certificate.

    Which CA matches, the device id and auth-id, and whether it would be accepted, provisioned or
    refused (and why). Writes nothing. Exit code 0 unless refused (3)."""
    path = api_path("/v1/tenants/{}/trusted-cas/check", tenant_id)
    result = run(data_dir, "POST", path, {"cert": _read(cert)})
    typer.echo(json.dumps(result, indent=2))
    if result["decision"] == "refused":
        raise typer.Exit(3)


@ca_tombstone.command("list")
def ca_tombstone_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Fingerprints of deleted devices' certificates, which auto-provisioning refuses."""
    result = run(data_dir, "GET", api_path("/v1/tenants/{}/tombstones", tenant_id))
    show(result, as_json, ["fingerprint", "deviceId", "caId", "deletedAt"])


@ca_tombstone.command("delete")
def ca_tombstone_delete(
    tenant_id: Tenant,
    fingerprint: Annotated[str, typer.Argument(metavar="FINGERPRINT", help="the certificate's SHA-256 fingerprint")],
    data_dir: DataDirOption = None,
) -> None:
    """Let the certificate provision a device again."""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/tombstones/{}", tenant_id, fingerprint))


Directory = Annotated[Path, typer.Argument(metavar="DIR", help="the PKI's directory")]


@pki.command("create-ca")
def pki_create_ca(
    directory: Directory,
    cn: Annotated[str, typer.Option("--cn", metavar="NAME", help="the CA's common name")] = "mqtt-gateway test CA",
    as_json: Annotated[bool, typer.Option("--json", help='print {"cert", "key"} paths as JSON')] = False,
) -> None:
    """Write DIR/ca.pem and DIR/ca.key (an EC P-256 CA). Refuses to overwrite an existing CA."""
    from pki.devca import write_ca

    if (directory / "ca.key").exists():
        raise fail(f"{directory / 'ca.key'} exists; not overwriting it")
    try:
        cert = write_ca(directory, cn)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot write the CA in {directory}: {exc}") from None
    typer.echo(json.dumps({"cert": str(cert), "key": str(directory / "ca.key")}) if as_json else cert)


@pki.command("issue")
def pki_issue(
    directory: Directory,
    common_name: Annotated[str, typer.Argument(metavar="COMMON_NAME", help="the device's CN (and the files' name)")],
    as_json: Annotated[bool, typer.Option("--json", help='print {"cert", "key"} paths as JSON')] = False,
) -> None:
    """Write DIR/COMMON_NAME.pem and DIR/COMMON_NAME.key, signed by DIR/ca.pem."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", common_name) or common_name.startswith("."):
        raise fail("COMMON_NAME must be 1-64 of A-Z a-z 0-9 . _ ~ - (it names the files)", 2)
    if not (directory / "ca.pem").exists():
        raise fail(f"no CA in {directory}; run `mqtt-gateway pki create-ca {directory}`")
    from pki.devca import write_device_cert

    try:
        cert_path, key_path = write_device_cert(directory, common_name)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot issue from the CA in {directory}: {exc}") from None
    typer.echo(json.dumps({"cert": str(cert_path), "key": str(key_path)}) if as_json else f"{cert_path}\n{key_path}")


@pki.command("server-cert")
def pki_server_cert(
    names: Annotated[
        list[str],
        typer.Option(
            "--name",
            metavar="NAME",
            help="a DNS name or IP address devices dial (repeat for more); loopback ones are kept",
        ),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Re-issue the development server certificate (DATA_DIR/tls/server.pem) for these names, signed by
    the development CA (made if missing). A running gateway uses it after SIGHUP; add the names to
    `tls_server_names` too, or a later start with fewer names keeps this one (it covers them)."""
    from pki.devca import ensure_server_tls
    from pki.names import LOOPBACK_NAMES, is_server_name

    from .client import data_dir_of

    bad = [n for n in names if not is_server_name(n)]
    if bad:
        raise fail(f"{bad[0]!r} is neither a DNS name nor an IP address", 2)
    wanted = [*dict.fromkeys([*names, *LOOPBACK_NAMES])]
    tls = ensure_server_tls(data_dir_of(data_dir) / "tls", wanted, reissue=True)
    typer.echo(f"{tls.cert_path} for {', '.join(wanted)} (CA: {tls.ca_path})")
    typer.echo("a running gateway presents it after SIGHUP (systemctl reload mqtt-gateway); sessions stay")
