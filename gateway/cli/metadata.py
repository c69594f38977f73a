"""`mqtt-gateway metadata ...`: a device's metadata (10/EPMP), as an operator reads and writes it."""

from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from .client import api_path, fail, run
from .options import DataDirOption, Device, JsonOption, Tenant, json_argument
from .output import show
from .typer_group import subgroup

metadata = subgroup("metadata", "A device's metadata: get, set, delete keys.")


def _show(values: dict[str, Any], as_json: bool) -> None:
    show(values if as_json else [{"key": k, "value": v} for k, v in values.items()], as_json, ["key", "value"])


@metadata.command("get")
def metadata_get(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Every key and value (values as JSON)."""
    _show(run(data_dir, "GET", api_path("/v1/tenants/{}/devices/{}/metadata", tenant_id, device_id)), as_json)


@metadata.command("set")
def metadata_set(
    tenant_id: Tenant,
    device_id: Device,
    values: Annotated[
        str, typer.Argument(metavar="JSON", help='an object such as \'{"location": "kitchen"}\', or @FILE.json')
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="the metadata becomes JSON: keys not in it are removed")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set keys (the others stay, unless --replace); prints the metadata as it now is."""
    path = api_path("/v1/tenants/{}/devices/{}/metadata", tenant_id, device_id)
    body = json_argument(values, "JSON")
    if not isinstance(body, dict):
        raise fail("JSON must be an object of key -> value", 2)
    _show(run(data_dir, "PUT" if replace else "PATCH", path, body), as_json)


@metadata.command("delete")
def metadata_delete(
    tenant_id: Tenant,
    device_id: Device,
    keys: Annotated[list[str], typer.Argument(metavar="KEY...", help="the keys to remove")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove keys; prints the metadata as it now is."""
    path = api_path("/v1/tenants/{}/devices/{}/metadata", tenant_id, device_id)
    if any("," in key or not key for key in keys):  # the API takes them comma-separated
        raise fail("a KEY is letters, digits and '_' (no ',')", 2)
    _show(run(data_dir, "DELETE", f"{path}?{urlencode({'keys': ','.join(keys)})}"), as_json)
