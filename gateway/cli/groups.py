"""`mqtt-gateway group ...`: device groups and their policies (7/CMP), through the management API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..kp1.payload import PayloadError, parse_json
from .admin import JsonOption, show
from .client import run
from .serve import DataDirOption

group = typer.Typer(name="group", help="Device groups, their members and their policy.", no_args_is_help=True)
policy = typer.Typer(name="policy", help="A group's policy, delivered to its devices by 7/CMP.", no_args_is_help=True)
group.add_typer(policy)

Tenant = Annotated[str, typer.Argument(metavar="TENANT")]
Group = Annotated[str, typer.Argument(metavar="GROUP")]
GROUP_COLUMNS = ["id", "devices", "configId", "description"]


@group.command("create")
def group_create(
    tenant_id: Tenant,
    group_id: Group,
    description: Annotated[str, typer.Option("--description", help="what the group is for")] = "",
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an empty group (its policy is `{}`)."""
    body = {"id": group_id, "description": description}
    show(run(data_dir, "POST", f"/v1/tenants/{tenant_id}/groups", body), as_json, GROUP_COLUMNS)


@group.command("list")
def group_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every group with its device count and policy id."""
    show(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/groups"), as_json, GROUP_COLUMNS)


@group.command("rename")
def group_rename(
    tenant_id: Tenant,
    group_id: Group,
    new_id: Annotated[str, typer.Argument(metavar="NEW_ID")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rename a group; its devices and the CAs that provision into it follow."""
    show(run(data_dir, "PATCH", f"/v1/tenants/{tenant_id}/groups/{group_id}", {"id": new_id}), as_json, GROUP_COLUMNS)


@group.command("delete")
def group_delete(
    tenant_id: Tenant,
    group_id: Group,
    move_to: Annotated[str | None, typer.Option("--move-to", help="move its devices and CAs here first")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a group: refused while it has devices, unless --move-to names another group."""
    query = f"?moveTo={move_to}" if move_to else ""
    run(data_dir, "DELETE", f"/v1/tenants/{tenant_id}/groups/{group_id}{query}")


@group.command("move")
def group_move(
    tenant_id: Tenant,
    group_id: Group,
    devices: Annotated[list[str], typer.Argument(metavar="DEVICE...", help="devices to move into GROUP")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move devices into GROUP (all or none); those observing get its policy pushed."""
    moved = run(data_dir, "POST", f"/v1/tenants/{tenant_id}/groups/{group_id}/devices", {"devices": devices})
    typer.echo(json.dumps(moved) if as_json else f"moved {len(moved['moved'])} device(s) into {group_id}")


@policy.command("set")
def policy_set(
    tenant_id: Tenant,
    group_id: Group,
    file: Annotated[Path, typer.Argument(metavar="FILE.json", exists=True, dir_okay=False, help="a JSON object")],
    data_dir: DataDirOption = None,
) -> None:
    """Replace the group's policy with FILE.json; prints its configId."""
    try:  # the rules the API holds a policy to: no duplicate keys, NaN or lone surrogates
        config = parse_json(file.read_bytes())
    except PayloadError as exc:
        typer.echo(f"mqtt-gateway: {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    result = run(data_dir, "PUT", f"/v1/tenants/{tenant_id}/groups/{group_id}/policy", config)
    typer.echo(json.dumps(result))


@policy.command("get")
def policy_get(tenant_id: Tenant, group_id: Group, data_dir: DataDirOption = None) -> None:
    """Print the group's policy as {"configId", "config"}."""
    typer.echo(json.dumps(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/groups/{group_id}/policy"), indent=2))
