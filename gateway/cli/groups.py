"""`mqtt-gateway group ...`: device groups and their policies (7/CMP), through the management API."""

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import typer

from ..kp1.payload import PayloadError, parse_json
from .client import api_path, fail, run
from .options import DataDirOption, JsonOption
from .output import show
from .typer_group import subgroup

group = subgroup("group", "Device groups, their members and their policy.")
policy = subgroup("policy", "A group's policy, delivered to its devices by 7/CMP.")
group.add_typer(policy)

Tenant = Annotated[str, typer.Argument(metavar="TENANT", help="the tenant's id")]
Group = Annotated[str, typer.Argument(metavar="GROUP", help="the group's id")]
GROUP_COLUMNS = ["id", "devices", "configId", "description"]


@group.command("create")
def group_create(
    tenant_id: Tenant,
    group_id: Group,
    description: Annotated[str, typer.Option("--description", metavar="TEXT", help="what the group is for")] = "",
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an empty group (its policy is `{}`)."""
    body = {"id": group_id, "description": description}
    show(run(data_dir, "POST", api_path("/v1/tenants/{}/groups", tenant_id), body), as_json, GROUP_COLUMNS)


@group.command("list")
def group_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every group with its device count and policy id."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/groups", tenant_id)), as_json, GROUP_COLUMNS)


@group.command("get")
def group_get(tenant_id: Tenant, group_id: Group, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """One group with its device count and policy id."""
    path = api_path("/v1/tenants/{}/groups/{}", tenant_id, group_id)
    show(run(data_dir, "GET", path), as_json, GROUP_COLUMNS)


@group.command("rename")
def group_rename(
    tenant_id: Tenant,
    group_id: Group,
    new_id: Annotated[str, typer.Argument(metavar="NEW_ID", help="the group's new id")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rename a group; its devices and the CAs that provision into it follow."""
    path = api_path("/v1/tenants/{}/groups/{}", tenant_id, group_id)
    show(run(data_dir, "PATCH", path, {"id": new_id}), as_json, GROUP_COLUMNS)


@group.command("update")
def group_update(
    tenant_id: Tenant,
    group_id: Group,
    description: Annotated[
        str | None, typer.Option("--description", metavar="TEXT", help="what the group is for")
    ] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a group's description (`group rename` changes its id)."""
    if description is None:
        raise fail("nothing to change: give --description", 2)
    path = api_path("/v1/tenants/{}/groups/{}", tenant_id, group_id)
    show(run(data_dir, "PATCH", path, {"description": description}), as_json, GROUP_COLUMNS)


@group.command("delete")
def group_delete(
    tenant_id: Tenant,
    group_id: Group,
    move_to: Annotated[
        str | None, typer.Option("--move-to", metavar="GROUP", help="move its devices and CAs here first")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a group: refused while it has devices, unless --move-to names another group."""
    query = f"?{urlencode({'moveTo': move_to})}" if move_to else ""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/groups/{}", tenant_id, group_id) + query)


@group.command("move")
def group_move(
    tenant_id: Tenant,
    group_id: Group,
    devices: Annotated[list[str], typer.Argument(metavar="DEVICE...", help="devices to move into GROUP")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move devices into GROUP (all or none); those observing get its policy pushed."""
    path = api_path("/v1/tenants/{}/groups/{}/devices", tenant_id, group_id)
    moved = run(data_dir, "POST", path, {"devices": devices})
    typer.echo(json.dumps(moved) if as_json else f"moved {len(moved['moved'])} device(s) into {group_id}")


@policy.command("set")
def policy_set(
    tenant_id: Tenant,
    group_id: Group,
    file: Annotated[Path, typer.Argument(metavar="FILE.json", exists=True, dir_okay=False, help="a JSON object")],
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="accepted for scripts: the answer is JSON anyway")] = False,
) -> None:
    """Replace the group's policy with FILE.json; prints {"configId", ...} as JSON."""
    path = api_path("/v1/tenants/{}/groups/{}/policy", tenant_id, group_id)
    try:  # the rules the API holds a policy to: no duplicate keys, NaN or lone surrogates
        config = parse_json(file.read_bytes())
    except (OSError, PayloadError) as exc:
        raise fail(f"{file}: {exc}") from None
    typer.echo(json.dumps(run(data_dir, "PUT", path, config)))


@policy.command("get")
def policy_get(
    tenant_id: Tenant,
    group_id: Group,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="accepted for scripts: the answer is JSON anyway")] = False,
) -> None:
    """Print the group's policy as {"configId", "config"}."""
    path = api_path("/v1/tenants/{}/groups/{}/policy", tenant_id, group_id)
    typer.echo(json.dumps(run(data_dir, "GET", path), indent=2))
