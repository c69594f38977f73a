"""`mqtt-gateway data ...` (2/DCP: what a device last sent) and `mqtt-gateway command ...` (11/CEP:
invoke a command on a device and read its result)."""

import json
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from .client import TIMEOUT_S, api_path, run
from .options import DataDirOption, Device, JsonOption, Tenant, json_argument
from .output import show
from .typer_group import subgroup

data = subgroup("data", "What devices send (2/DCP).")
command = subgroup("command", "Commands to devices (11/CEP): invoke, read a result.")
CommandType = Annotated[str, typer.Argument(metavar="TYPE", help="the command type, e.g. reboot")]
COMMAND_COLUMNS = ["id", "state", "statusCode", "reasonPhrase", "payload"]


@data.command("last")
def data_last(
    tenant_id: Tenant, device_id: Device, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """The last sample a device sent.

    When it came, and how many messages and samples this node has taken from the device."""
    path = api_path("/v1/tenants/{}/devices/{}/data/last", tenant_id, device_id)
    show(run(data_dir, "GET", path), as_json, ["endpointId", "appVersionName", "receivedAt", "sample", "messages"])


@command.command("invoke")
def command_invoke(
    tenant_id: Tenant,
    device_id: Device,
    command_type: CommandType,
    payload: Annotated[
        str | None, typer.Argument(metavar="[PAYLOAD]", help="any JSON value for the device, or @FILE.json")
    ] = None,
    timeout_ms: Annotated[
        int, typer.Option("--timeout-ms", metavar="MS", help="it expires unanswered after this (1000-300000)")
    ] = 30_000,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="wait for the device's result, or print the id at once")
    ] = True,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a command to a device.

    Pushed now, or when the device next asks (it may be offline), until it expires. Waits for the
    result unless --no-wait (then prints its id); exit 1 (504) when none came in time."""
    path = api_path("/v1/tenants/{}/devices/{}/commands/{}", tenant_id, device_id, command_type)
    body: dict[str, Any] = {"timeoutMs": timeout_ms}
    if payload is not None:
        body["payload"] = json_argument(payload, "PAYLOAD")
    query = "" if wait else f"?{urlencode({'wait': 'false'})}"
    result = run(data_dir, "POST", path + query, body, timeout=timeout_ms / 1000 + TIMEOUT_S)
    if as_json or not wait:
        typer.echo(json.dumps(result, indent=2) if as_json else str(result["id"]))
    else:
        show(result, False, COMMAND_COLUMNS)


@command.command("get")
def command_get(
    tenant_id: Tenant,
    device_id: Device,
    command_type: CommandType,
    command_id: Annotated[str, typer.Argument(metavar="ID", help="the id `command invoke` printed")],
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """A command's state and the device's result.

    The state is pending, delivered, succeeded, failed or expired."""
    path = api_path("/v1/tenants/{}/devices/{}/commands/{}/{}", tenant_id, device_id, command_type, command_id)
    show(run(data_dir, "GET", path), as_json, [*COMMAND_COLUMNS, "createdAt", "completedAt"])
