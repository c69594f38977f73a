"""`mqtt-gateway ca ...` (a tenant's trusted CAs) and `mqtt-gateway pki ...` (a test PKI on disk)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from pki.devca import write_ca, write_device_cert
from pki.templates import DEFAULT_AUTH_ID_TEMPLATE, DEFAULT_DEVICE_ID_TEMPLATE

from .admin import JsonOption, show
from .client import run
from .serve import DataDirOption

ca = typer.Typer(
    name="ca", help="A tenant's trusted CAs: add, list, remove, and check a device certificate.", no_args_is_help=True
)
pki = typer.Typer(
    name="pki", help="A development PKI: a test CA and device certificates (EC P-256).", no_args_is_help=True
)

CA_COLUMNS = ["id", "subjectDn", "enabled", "autoProvisioningEnabled", "deviceIdTemplate", "notAfter"]
TenantArg = Annotated[str, typer.Argument(metavar="TENANT")]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"mqtt-gateway: cannot read {path}: {exc}", err=True)
        raise typer.Exit(2) from None


@ca.command("add")
def ca_add(
    tenant_id: TenantArg,
    cert: Annotated[Path, typer.Argument(metavar="CA.pem")],
    auto_provision: Annotated[bool, typer.Option("--auto-provision", help="provision unknown devices")] = False,
    device_id_template: Annotated[str, typer.Option("--device-id-template")] = DEFAULT_DEVICE_ID_TEMPLATE,
    auth_id_template: Annotated[str, typer.Option("--auth-id-template")] = DEFAULT_AUTH_ID_TEMPLATE,
    group: Annotated[str, typer.Option("--group")] = "default",
    app_version: Annotated[str | None, typer.Option("--app-version")] = None,
    rate: Annotated[int | None, typer.Option("--rate-per-minute", help="provisionings per minute")] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    body = {
        "cert": _read(cert),
        "autoProvisioningEnabled": auto_provision,
        "deviceIdTemplate": device_id_template,
        "authIdTemplate": auth_id_template,
        "group": group,
        "appVersion": app_version,
        "provisioningRatePerMinute": rate,
    }
    show(run(data_dir, "POST", f"/v1/tenants/{tenant_id}/trusted-cas", body), as_json, CA_COLUMNS)


@ca.command("list")
def ca_list(tenant_id: TenantArg, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    show(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/trusted-cas"), as_json, CA_COLUMNS)


@ca.command("remove")
def ca_remove(
    tenant_id: TenantArg, ca_id: Annotated[str, typer.Argument(metavar="ID")], data_dir: DataDirOption = None
) -> None:
    """Stop trusting the CA; its devices' live sessions are closed."""
    run(data_dir, "DELETE", f"/v1/tenants/{tenant_id}/trusted-cas/{ca_id}")


@ca.command("check")
def ca_check(
    tenant_id: TenantArg,
    cert: Annotated[Path, typer.Argument(metavar="DEVICE.pem")],
    data_dir: DataDirOption = None,
) -> None:
    """Dry-run: which CA matches, the device id and auth-id, and whether it would be accepted,
    provisioned or refused (and why). Writes nothing. Exit code 0 unless refused."""
    result = run(data_dir, "POST", f"/v1/tenants/{tenant_id}/trusted-cas/check", {"cert": _read(cert)})
    typer.echo(json.dumps(result, indent=2))
    if result["decision"] == "refused":
        raise typer.Exit(3)


@pki.command("create-ca")
def pki_create_ca(
    directory: Annotated[Path, typer.Argument(metavar="DIR")],
    cn: Annotated[str, typer.Option("--cn", help="the CA's common name")] = "mqtt-gateway test CA",
) -> None:
    """Write DIR/ca.pem and DIR/ca.key (an EC P-256 CA). Refuses to overwrite an existing CA."""
    if (directory / "ca.key").exists():
        typer.echo(f"mqtt-gateway: {directory / 'ca.key'} exists; not overwriting it", err=True)
        raise typer.Exit(1)
    typer.echo(write_ca(directory, cn))


@pki.command("issue")
def pki_issue(
    directory: Annotated[Path, typer.Argument(metavar="DIR")],
    common_name: Annotated[str, typer.Argument(metavar="COMMON_NAME")],
) -> None:
    """Write DIR/COMMON_NAME.pem and DIR/COMMON_NAME.key, signed by DIR/ca.pem."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]{1,64}", common_name) or common_name.startswith("."):
        typer.echo("mqtt-gateway: COMMON_NAME must be 1-64 of A-Z a-z 0-9 . _ ~ - (it names the files)", err=True)
        raise typer.Exit(2)
    if not (directory / "ca.pem").exists():
        typer.echo(f"mqtt-gateway: no CA in {directory}; run `mqtt-gateway pki create-ca {directory}`", err=True)
        raise typer.Exit(1)
    cert_path, key_path = write_device_cert(directory, common_name)
    typer.echo(f"{cert_path}\n{key_path}")


@pki.command("server-cert")
def pki_server_cert(
    names: Annotated[
        list[str],
        typer.Option("--name", help="a DNS name or IP address devices dial (repeat for more); loopback ones are kept"),
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
        typer.echo(f"mqtt-gateway: {bad[0]!r} is neither a DNS name nor an IP address", err=True)
        raise typer.Exit(2)
    wanted = [*dict.fromkeys([*names, *LOOPBACK_NAMES])]
    tls = ensure_server_tls(data_dir_of(data_dir) / "tls", wanted, reissue=True)
    typer.echo(f"{tls.cert_path} for {', '.join(wanted)} (CA: {tls.ca_path})")
    typer.echo("a running gateway presents it after SIGHUP (systemctl reload mqtt-gateway); sessions stay")
