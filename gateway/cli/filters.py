"""`mqtt-gateway filter ...`: endpoint filters (saved device queries, 18/EFE), through the management API."""

import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from .client import api_path, run
from .options import DataDirOption, JsonOption, json_argument
from .output import show
from .typer_group import subgroup

endpoint_filter = subgroup("filter", "Endpoint filters: saved device queries kept up to date.")

Tenant = Annotated[str, typer.Argument(metavar="TENANT", help="the tenant's id")]
Filter = Annotated[str, typer.Argument(metavar="FILTER", help="the filter's id")]
Query = Annotated[
    str,
    typer.Argument(
        metavar="QUERY",
        help='JSON such as \'{"metadata.city": "Kyiv", "connected": true}\', or @FILE.json (docs/fleet.md)',
    ),
]
Wait = Annotated[float, typer.Option("--wait", metavar="SECONDS", help="wait this long for the first scan (0: do not)")]
FILTER_COLUMNS = ["id", "state", "matching", "query"]
ENDPOINT_COLUMNS = ["endpointId", "appVersionName", "matchedAt"]


@endpoint_filter.command("create")
def filter_create(
    tenant_id: Tenant,
    filter_id: Filter,
    query: Query,
    wait: Wait = 60.0,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Save a filter and wait until the gateway has evaluated it over the tenant's devices."""
    saved = run(
        data_dir,
        "POST",
        api_path("/v1/tenants/{}/endpoint-filters", tenant_id),
        {"id": filter_id, "query": json_argument(query, "QUERY")},
    )
    show(_settled(data_dir, tenant_id, filter_id, saved, wait), as_json, FILTER_COLUMNS)


@endpoint_filter.command("update")
def filter_update(
    tenant_id: Tenant,
    filter_id: Filter,
    query: Query,
    wait: Wait = 60.0,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace a filter's query and wait until it is evaluated again."""
    path = api_path("/v1/tenants/{}/endpoint-filters/{}", tenant_id, filter_id)
    saved = run(data_dir, "PUT", path, {"query": json_argument(query, "QUERY")})
    show(_settled(data_dir, tenant_id, filter_id, saved, wait), as_json, FILTER_COLUMNS)


def _settled(data_dir: Path | None, tenant_id: str, filter_id: str, saved: Any, wait: float) -> Any:
    """The filter once its first scan is done, or as it is after `wait` seconds."""
    deadline = time.monotonic() + wait
    while saved["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        saved = run(data_dir, "GET", api_path("/v1/tenants/{}/endpoint-filters/{}", tenant_id, filter_id))
    return saved


@endpoint_filter.command("list")
def filter_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every filter with its state and how many devices match it."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/endpoint-filters", tenant_id)), as_json, FILTER_COLUMNS)


@endpoint_filter.command("get")
def filter_get(
    tenant_id: Tenant, filter_id: Filter, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """One filter: its query, state and how many devices match it."""
    path = api_path("/v1/tenants/{}/endpoint-filters/{}", tenant_id, filter_id)
    show(run(data_dir, "GET", path), as_json, FILTER_COLUMNS)


@endpoint_filter.command("match")
def filter_match(
    tenant_id: Tenant,
    filter_id: Filter,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="devices per page (at most 1000)")] = 100,
    after: Annotated[
        str | None, typer.Option("--after", metavar="CURSOR", help="the `next` cursor of the previous page")
    ] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="every page, one after the other")] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The devices that match the filter now.

    A page at a time; the cursor of the next page is printed last."""
    path = api_path("/v1/tenants/{}/endpoint-filters/{}/endpoints", tenant_id, filter_id)
    cursor = after
    while True:
        page = run(data_dir, "GET", f"{path}?{urlencode({'limit': limit, **({'after': cursor} if cursor else {})})}")
        if as_json:
            typer.echo(json.dumps(page["endpoints"] if all_pages else page, indent=None if all_pages else 2))
        else:
            show(page["endpoints"], False, ENDPOINT_COLUMNS)
        cursor = page["next"]
        if not all_pages or cursor is None:
            break
    if not as_json:
        if page["state"] == "pending":
            typer.echo("the filter is still pending: this list is not complete yet")
        typer.echo(f"next: {cursor}" if cursor else "next: - (last page)")


@endpoint_filter.command("delete")
def filter_delete(tenant_id: Tenant, filter_id: Filter, data_dir: DataDirOption = None) -> None:
    """Delete a filter (its members go with it)."""
    run(data_dir, "DELETE", api_path("/v1/tenants/{}/endpoint-filters/{}", tenant_id, filter_id))
