"""Tenant, device, token and password commands: thin calls to the management API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .client import run
from .serve import DataDirOption

tenant = typer.Typer(name="tenant", help="Create, list, disable and delete tenants.", no_args_is_help=True)
device = typer.Typer(name="device", help="Create, inspect, disable and delete devices.", no_args_is_help=True)
token = typer.Typer(
    name="token", help="Issue endpoint tokens and move them through their states.", no_args_is_help=True
)
password = typer.Typer(name="password", help="Username/password credentials.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]


service_account = typer.Typer(
    name="service-account", help="A tenant's event consumers (role service).", no_args_is_help=True
)


def groups() -> list[typer.Typer]:
    return [tenant, device, token, password, service_account]


@service_account.command("create")
def service_account_create(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    data_dir: DataDirOption = None,
) -> None:
    """Prints {"id", "username", "password"}; the password is shown this once."""
    typer.echo(json.dumps(run(data_dir, "POST", f"/v1/tenants/{tenant_id}/service-accounts", {"id": account_id})))


@service_account.command("delete")
def service_account_delete(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    account_id: Annotated[str, typer.Argument(metavar="ID")],
    data_dir: DataDirOption = None,
) -> None:
    """Delete the account and close its sessions."""
    run(data_dir, "DELETE", f"/v1/tenants/{tenant_id}/service-accounts/{account_id}")


def _print(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json or columns is None:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _attrs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            typer.echo(f"mqtt-gateway: --attr wants key=value, got {pair!r}", err=True)
            raise typer.Exit(2)
        out[key] = value
    return out


TENANT_COLUMNS = ["id", "enabled", "maxDevices", "createdAt"]
DEVICE_COLUMNS = ["id", "group", "appVersion", "state", "enabled", "attributes"]


@tenant.command("create")
def tenant_create(id: str, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Create tenant ID."""
    _print(run(data_dir, "POST", "/v1/tenants", {"id": id}), as_json, TENANT_COLUMNS)


@tenant.command("list")
def tenant_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    _print(run(data_dir, "GET", "/v1/tenants"), as_json, TENANT_COLUMNS)


@tenant.command("disable")
def tenant_disable(id: str, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Refuse the tenant's devices and close their sessions."""
    _print(run(data_dir, "PATCH", f"/v1/tenants/{id}", {"enabled": False}), as_json, TENANT_COLUMNS)


@tenant.command("enable")
def tenant_enable(id: str, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    _print(run(data_dir, "PATCH", f"/v1/tenants/{id}", {"enabled": True}), as_json, TENANT_COLUMNS)


@tenant.command("delete")
def tenant_delete(id: str, data_dir: DataDirOption = None) -> None:
    """Delete the tenant with all its devices and credentials."""
    run(data_dir, "DELETE", f"/v1/tenants/{id}")


@device.command("create")
def device_create(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    group: Annotated[str, typer.Option("--group")] = "default",
    app_version: Annotated[str | None, typer.Option("--app-version")] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value, repeatable")] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    body = {"id": device_id, "group": group, "appVersion": app_version, "attributes": _attrs(attr or [])}
    _print(run(data_dir, "POST", f"/v1/tenants/{tenant_id}/devices", body), as_json, DEVICE_COLUMNS)


@device.command("list")
def device_list(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    _print(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices"), as_json, DEVICE_COLUMNS)


@device.command("get")
def device_get(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    _print(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}"), as_json, DEVICE_COLUMNS)


@device.command("status")
def device_status(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
) -> None:
    """Connection status and log, as JSON."""
    _print(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}/connection"), True)


def _set_device(data_dir: Any, tenant_id: str, device_id: str, enabled: bool, as_json: bool) -> None:
    body = {"enabled": enabled}
    _print(run(data_dir, "PATCH", f"/v1/tenants/{tenant_id}/devices/{device_id}", body), as_json, DEVICE_COLUMNS)


@device.command("disable")
def device_disable(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Refuse the device and close its sessions."""
    _set_device(data_dir, tenant_id, device_id, False, as_json)


@device.command("enable")
def device_enable(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    _set_device(data_dir, tenant_id, device_id, True, as_json)


@device.command("delete")
def device_delete(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
) -> None:
    run(data_dir, "DELETE", f"/v1/tenants/{tenant_id}/devices/{device_id}")


@token.command("issue")
def token_issue(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    value: Annotated[str | None, typer.Option("--token", help="use this token instead of a generated one")] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue an endpoint token; prints the token alone (or the JSON record with --json)."""
    body = {"token": value} if value else None
    result = run(data_dir, "POST", f"/v1/tenants/{tenant_id}/devices/{device_id}/tokens", body)
    typer.echo(json.dumps(result, indent=2) if as_json else result["token"])


@token.command("set-state")
def token_set_state(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    value: Annotated[str, typer.Argument(metavar="TOKEN")],
    state: Annotated[str, typer.Argument(metavar="STATE", help="inactive, active, suspended or revoked")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    result = run(data_dir, "PATCH", f"/v1/tenants/{tenant_id}/tokens/{value}", {"state": state})
    _print(result, as_json, ["token", "device", "state", "lastUsedAt"])


@token.command("list")
def token_list(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    result = run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}/tokens")
    _print(result, as_json, ["token", "state", "createdAt", "lastUsedAt"])


@password.command("set")
def password_set(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    auth_id: Annotated[str, typer.Argument(metavar="AUTH_ID")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set AUTH_ID's password, read from stdin (first line). MQTT username: AUTH_ID@TENANT."""
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        typer.echo("mqtt-gateway: no password on stdin", err=True)
        raise typer.Exit(2)
    result = run(
        data_dir, "PUT", f"/v1/tenants/{tenant_id}/devices/{device_id}/passwords/{auth_id}", {"password": secret}
    )
    _print(result, as_json, ["authId", "username", "state", "lastUsedAt"])
