"""Tenant and device commands: thin calls to the management API."""

from typing import Annotated, Any

import typer

from .client import api_path, fail, run
from .imports import device_import
from .options import AttrOption, DataDirOption, Device, JsonOption, Tenant, YesOption, confirm, pairs
from .output import pages, show
from .typer_group import subgroup

tenant = subgroup("tenant", "Create, list, change, disable and delete tenants.")
device = subgroup("device", "Devices: create, list, inspect, change, delete.")
tombstone = subgroup("tombstone", "Deleted devices: what is left of them (their ids stay taken).")
device.add_typer(tombstone)


TENANT_COLUMNS = ["id", "enabled", "maxDevices", "maxConnections", "forwardExtensions", "createdAt"]
DEVICE_COLUMNS = ["id", "group", "appVersion", "state", "enabled", "attributes"]
DEVICE_DETAIL_COLUMNS = [*DEVICE_COLUMNS, "autoProvisioned", "policy", "createdAt"]
TenantId = Annotated[str, typer.Argument(metavar="ID", help="the tenant's id")]


def _limit(value: str | None, option: str) -> dict[str, int | None]:
    """`--max-devices 10` -> {"...": 10}; `none` -> null (no limit); not given -> nothing."""
    if value is None:
        return {}
    if value.lower() == "none":
        return {option: None}
    try:
        return {option: int(value)}
    except ValueError:
        raise fail(f"{option}: a number or none, got {value!r}", 2) from None


MaxDevices = Annotated[
    str | None, typer.Option("--max-devices", metavar="N|none", help="devices the tenant may have (none: no limit)")
]
MaxConnections = Annotated[
    str | None,
    typer.Option(
        "--max-connections",
        metavar="N|none",
        help="sessions its devices may hold at once on a node (none: tenant_connections_share of the node)",
    ),
]
ForwardExtension = Annotated[
    list[str] | None,
    typer.Option(
        "--forward-extension",
        metavar="EXT",
        help="a 1/KP extension (besides dcx) whose device publishes reach the tenant's applications; repeat for more",
    ),
]


@tenant.command("create")
def tenant_create(
    id: TenantId,
    max_devices: MaxDevices = None,
    max_connections: MaxConnections = None,
    forward_extension: ForwardExtension = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant."""
    body: dict[str, Any] = {"id": id}
    body |= _limit(max_devices, "maxDevices") | _limit(max_connections, "maxConnections")
    if forward_extension:
        body["forwardExtensions"] = forward_extension
    show(run(data_dir, "POST", "/v1/tenants", body), as_json, TENANT_COLUMNS)


@tenant.command("list")
def tenant_list(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every tenant."""
    show(run(data_dir, "GET", "/v1/tenants"), as_json, TENANT_COLUMNS)


@tenant.command("get")
def tenant_get(id: TenantId, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """One tenant with its limits."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}", id)), as_json, TENANT_COLUMNS)


@tenant.command("update")
def tenant_update(
    id: TenantId,
    max_devices: MaxDevices = None,
    max_connections: MaxConnections = None,
    forward_extension: ForwardExtension = None,
    no_forward_extensions: Annotated[
        bool, typer.Option("--no-forward-extensions", help="forward no extension besides dcx")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a tenant's limits or forwarded extensions.

    What is not given stays as it is."""
    body: dict[str, Any] = _limit(max_devices, "maxDevices") | _limit(max_connections, "maxConnections")
    if forward_extension and no_forward_extensions:
        raise fail("--forward-extension and --no-forward-extensions exclude each other", 2)
    if forward_extension or no_forward_extensions:
        body["forwardExtensions"] = forward_extension or []
    if not body:
        raise fail("nothing to change: give --max-devices, --max-connections or --forward-extension", 2)
    show(run(data_dir, "PATCH", api_path("/v1/tenants/{}", id), body), as_json, TENANT_COLUMNS)


@tenant.command("disable")
def tenant_disable(id: TenantId, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Refuse the tenant's devices and close their sessions."""
    show(run(data_dir, "PATCH", api_path("/v1/tenants/{}", id), {"enabled": False}), as_json, TENANT_COLUMNS)


@tenant.command("enable")
def tenant_enable(id: TenantId, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Accept the tenant's devices again."""
    show(run(data_dir, "PATCH", api_path("/v1/tenants/{}", id), {"enabled": True}), as_json, TENANT_COLUMNS)


@tenant.command("delete")
def tenant_delete(id: TenantId, yes: YesOption = False, data_dir: DataDirOption = None) -> None:
    """Delete a tenant and everything in it.

    Its devices, credentials, groups and CAs. Asks first, unless --yes (needed when stdin is not a terminal)."""
    target = api_path("/v1/tenants/{}", id)
    confirm(f"Delete tenant {id!r} with all its devices, credentials and CAs?", yes)
    run(data_dir, "DELETE", target)


@device.command("create")
def device_create(
    tenant_id: Tenant,
    device_id: Device,
    group: Annotated[str, typer.Option("--group", metavar="GROUP", help="an existing group")] = "default",
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="VERSION", help="its application version")
    ] = None,
    attr: AttrOption = None,
    reuse_deleted_id: Annotated[
        bool, typer.Option("--reuse-deleted-id", help="take the id of a deleted device again, on purpose")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a device (`enrolled` until its first credential)."""
    body = {"id": device_id, "group": group, "appVersion": app_version, "attributes": pairs(attr or [], "--attr")}
    query = "?reuseDeletedId=true" if reuse_deleted_id else ""
    show(run(data_dir, "POST", api_path("/v1/tenants/{}/devices", tenant_id) + query, body), as_json, DEVICE_COLUMNS)


LimitPage = Annotated[int, typer.Option("--limit", metavar="N", help="devices per page (1-1000)")]
After = Annotated[str | None, typer.Option("--after", metavar="CURSOR", help="the `next` cursor of the previous page")]
AllPages = Annotated[bool, typer.Option("--all", help="every page, one after the other")]


@device.command("list")
def device_list(
    tenant_id: Tenant,
    limit: LimitPage = 100,
    after: After = None,
    all_pages: AllPages = False,
    group: Annotated[str | None, typer.Option("--group", metavar="GROUP", help="in this group")] = None,
    state: Annotated[
        str | None, typer.Option("--state", metavar="STATE", help="enrolled, registered or provisioned")
    ] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="enabled or disabled ones")] = None,
    connected: Annotated[bool | None, typer.Option("--connected/--not-connected", help="connected now, or not")] = None,
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="VERSION", help="with this app version")
    ] = None,
    auto_provisioned: Annotated[
        bool | None, typer.Option("--auto-provisioned/--not-auto-provisioned", help="made by auto-provisioning, or not")
    ] = None,
    attr: Annotated[
        list[str] | None, typer.Option("--attr", metavar="KEY=VALUE", help="with this attribute; repeatable")
    ] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", metavar="KEY=VALUE", help="with this metadata; repeatable")
    ] = None,
    last_seen_before: Annotated[
        str | None, typer.Option("--last-seen-before", metavar="TIME", help="not connected since (ISO time)")
    ] = None,
    last_seen_after: Annotated[
        str | None, typer.Option("--last-seen-after", metavar="TIME", help="connected since (ISO time)")
    ] = None,
    q: Annotated[str | None, typer.Option("--q", metavar="PREFIX", help="device id prefix")] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List devices, filtered, a page at a time.

    The cursor of the next page is printed last (`--after` it, or `--all` pages)."""
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
    params |= {f"attr.{k}": v for k, v in pairs(attr or [], "--attr").items()}
    params |= {f"metadata.{k}": v for k, v in pairs(metadata or [], "--metadata").items()}
    pages(
        data_dir,
        api_path("/v1/tenants/{}/devices", tenant_id),
        params,
        "devices",
        DEVICE_COLUMNS,
        after,
        all_pages,
        as_json,
    )


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


@device.command("get")
def device_get(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """One device: group, app version, state, attributes, auto-provisioned, its group's policy.

    The policy column: applied, pending (not applied yet), failed (its last apply, with the device's
    status), or - (its group has none); --json has the config ids."""
    found = run(data_dir, "GET", api_path("/v1/tenants/{}/devices/{}", tenant_id, device_id))
    show(found if as_json else found | {"policy": _policy(found)}, as_json, DEVICE_DETAIL_COLUMNS)


def _policy(device: dict[str, Any]) -> str:
    error = device.get("configError")
    if device.get("policyPending"):
        if isinstance(error, dict) and error.get("configId") == device.get("configAssigned"):
            return f"failed ({error['statusCode']} {error['reasonPhrase']})"
        return "pending"
    return "applied" if device.get("configAssigned") is not None else "-"


@device.command("status")
def device_status(
    tenant_id: Tenant,
    device_id: Device,
    log: Annotated[int, typer.Option("--log", metavar="N", help="connection log entries (0-1000)")] = 50,
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="accepted for scripts: the status is JSON anyway")] = False,
) -> None:
    """Connection status and log, as JSON."""
    path = api_path("/v1/tenants/{}/devices/{}/connection", tenant_id, device_id)
    show(run(data_dir, "GET", f"{path}?log={log}"), True)


@device.command("history")
def device_history(
    tenant_id: Tenant,
    device_id: Device,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="entries (1-1000)")] = 100,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The device's lifecycle, newest first.

    Created, state changes (with why), policies applied or failed."""
    path = api_path("/v1/tenants/{}/devices/{}/history", tenant_id, device_id)
    show(run(data_dir, "GET", f"{path}?limit={limit}"), as_json, ["at", "event", "detail"])


@device.command("update")
def device_update(
    tenant_id: Tenant,
    device_id: Device,
    group: Annotated[str | None, typer.Option("--group", metavar="GROUP", help="move it into this group")] = None,
    app_version: Annotated[
        str | None, typer.Option("--app-version", metavar="VERSION", help="its new app version")
    ] = None,
    clear_app_version: Annotated[bool, typer.Option("--clear-app-version", help="it has no app version")] = False,
    attr: Annotated[
        list[str] | None,
        typer.Option("--attr", metavar="KEY=VALUE", help="its attributes become these (all of them); repeatable"),
    ] = None,
    clear_attrs: Annotated[bool, typer.Option("--clear-attrs", help="it has no attributes")] = False,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled", help="accept it, or refuse it")] = None,
    state: Annotated[
        str | None, typer.Option("--state", metavar="STATE", help="an operator transition: registered")
    ] = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a device.

    What is not given stays as it is; --attr replaces all of its attributes."""
    if app_version is not None and clear_app_version:
        raise fail("--app-version and --clear-app-version exclude each other", 2)
    if attr and clear_attrs:
        raise fail("--attr and --clear-attrs exclude each other", 2)
    body: dict[str, Any] = {
        k: v for k, v in {"group": group, "enabled": enabled, "state": state}.items() if v is not None
    }
    if app_version is not None or clear_app_version:
        body["appVersion"] = app_version
    if attr or clear_attrs:
        body["attributes"] = pairs(attr or [], "--attr")
    if not body:
        raise fail("nothing to change: give --group, --app-version, --attr, --enabled/--disabled or --state", 2)
    path = api_path("/v1/tenants/{}/devices/{}", tenant_id, device_id)
    show(run(data_dir, "PATCH", path, body), as_json, DEVICE_COLUMNS)


@device.command("disable")
def device_disable(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Refuse the device and close its sessions."""
    path = api_path("/v1/tenants/{}/devices/{}", tenant_id, device_id)
    show(run(data_dir, "PATCH", path, {"enabled": False}), as_json, DEVICE_COLUMNS)


@device.command("enable")
def device_enable(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Accept the device again."""
    path = api_path("/v1/tenants/{}/devices/{}", tenant_id, device_id)
    show(run(data_dir, "PATCH", path, {"enabled": True}), as_json, DEVICE_COLUMNS)


@device.command("delete")
def device_delete(tenant_id: Tenant, device_id: Device, yes: YesOption = False, data_dir: DataDirOption = None) -> None:
    """Delete a device and close its sessions.

    Its credentials and metadata go with it. Asks first, unless --yes (needed when stdin is not a terminal)."""
    path = api_path("/v1/tenants/{}/devices/{}", tenant_id, device_id)
    confirm(f"Delete device {device_id!r} of tenant {tenant_id!r} with its credentials?", yes)
    run(data_dir, "DELETE", path)


@device.command("connected")
def device_connected(
    tenant_id: Tenant,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="devices per page (1-10000)")] = 1000,
    after: After = None,
    all_pages: AllPages = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The tenant's devices connected now.

    With their sessions and node; the cursor of the next page is printed last."""
    path = api_path("/v1/tenants/{}/connected-devices", tenant_id)
    columns = ["id", "sessions", "node", "connectedSince"]
    pages(data_dir, path, {"limit": limit}, "devices", columns, after, all_pages, as_json)


@tombstone.command("list")
def device_tombstones(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Deleted devices (the newest 1,000): id, group, app version, when."""
    path = api_path("/v1/tenants/{}/deleted-devices", tenant_id)
    show(run(data_dir, "GET", path), as_json, ["id", "group", "appVersion", "deletedAt"])


device.command("import")(device_import)  # in gateway/cli/imports.py, with the `import-job` commands
