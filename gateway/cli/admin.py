"""Tenant, device, token and password commands: thin calls to the management API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any
from urllib.parse import urlencode

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


def show(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
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
    show(run(data_dir, "POST", "/v1/tenants", {"id": id}), as_json, TENANT_COLUMNS)


@tenant.command("list")
def tenant_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    show(run(data_dir, "GET", "/v1/tenants"), as_json, TENANT_COLUMNS)


@tenant.command("disable")
def tenant_disable(id: str, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Refuse the tenant's devices and close their sessions."""
    show(run(data_dir, "PATCH", f"/v1/tenants/{id}", {"enabled": False}), as_json, TENANT_COLUMNS)


@tenant.command("enable")
def tenant_enable(id: str, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    show(run(data_dir, "PATCH", f"/v1/tenants/{id}", {"enabled": True}), as_json, TENANT_COLUMNS)


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
    show(run(data_dir, "POST", f"/v1/tenants/{tenant_id}/devices", body), as_json, DEVICE_COLUMNS)


@device.command("list")
def device_list(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    limit: Annotated[int, typer.Option("--limit", help="devices per page (1-1000)")] = 100,
    after: Annotated[str | None, typer.Option("--after", help="the `next` cursor of the previous page")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="every page, one after the other")] = False,
    group: Annotated[str | None, typer.Option("--group", help="in this group")] = None,
    state: Annotated[str | None, typer.Option("--state", help="enrolled, registered or provisioned")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="enabled or disabled ones")] = None,
    connected: Annotated[bool | None, typer.Option("--connected/--not-connected", help="connected now, or not")] = None,
    app_version: Annotated[str | None, typer.Option("--app-version", help="with this app version")] = None,
    auto_provisioned: Annotated[
        bool | None, typer.Option("--auto-provisioned/--not-auto-provisioned", help="made by auto-provisioning, or not")
    ] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="attribute key=value, repeatable")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", help="metadata key=value, repeatable")] = None,
    last_seen_before: Annotated[str | None, typer.Option("--last-seen-before", help="ISO time")] = None,
    last_seen_after: Annotated[str | None, typer.Option("--last-seen-after", help="ISO time")] = None,
    q: Annotated[str | None, typer.Option("--q", help="device id prefix")] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List devices a page at a time (the cursor of the next page is printed last), filtered."""
    params: dict[str, Any] = {
        "limit": limit,
        "group": group,
        "state": state,
        "enabled": _flag(enabled),
        "connected": _flag(connected),
        "appVersion": app_version,
        "autoProvisioned": _flag(auto_provisioned),
        "lastSeenBefore": last_seen_before,
        "lastSeenAfter": last_seen_after,
        "q": q,
    }
    params |= {f"attr.{k}": v for k, v in _attrs(attr or []).items()}
    params |= {f"metadata.{k}": v for k, v in _attrs(metadata or []).items()}
    cursor = after
    while True:
        query = {k: v for k, v in {**params, "after": cursor}.items() if v is not None}
        page = run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices?{urlencode(query)}")
        if as_json:
            typer.echo(json.dumps(page["devices"] if all_pages else page, indent=None if all_pages else 2))
        else:
            show(page["devices"], False, DEVICE_COLUMNS)
        cursor = page["next"]
        if not all_pages or cursor is None:
            break
    if not as_json:
        typer.echo(f"next: {cursor}" if cursor else "next: - (last page)")


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


@device.command("get")
def device_get(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    show(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}"), as_json, DEVICE_COLUMNS)


@device.command("status")
def device_status(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
) -> None:
    """Connection status and log, as JSON."""
    show(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}/connection"), True)


def _set_device(data_dir: Any, tenant_id: str, device_id: str, enabled: bool, as_json: bool) -> None:
    body = {"enabled": enabled}
    show(run(data_dir, "PATCH", f"/v1/tenants/{tenant_id}/devices/{device_id}", body), as_json, DEVICE_COLUMNS)


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
    show(result, as_json, ["token", "device", "state", "lastUsedAt"])


@token.command("list")
def token_list(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    result = run(data_dir, "GET", f"/v1/tenants/{tenant_id}/devices/{device_id}/tokens")
    show(result, as_json, ["token", "state", "createdAt", "lastUsedAt"])


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
    show(result, as_json, ["authId", "username", "state", "lastUsedAt"])
