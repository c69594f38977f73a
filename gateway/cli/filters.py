"""`mqtt-gateway filter ...`: endpoint filters (saved device queries, 18/EFE), through the management API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from ..kp1.payload import PayloadError, parse_json
from .admin import JsonOption, show
from .client import run
from .serve import DataDirOption

endpoint_filter = typer.Typer(
    name="filter", help="Endpoint filters: saved device queries kept up to date.", no_args_is_help=True
)

Tenant = Annotated[str, typer.Argument(metavar="TENANT")]
Filter = Annotated[str, typer.Argument(metavar="FILTER", help="the filter's id")]
FILTER_COLUMNS = ["id", "state", "matching", "query"]
ENDPOINT_COLUMNS = ["endpointId", "appVersionName", "matchedAt"]


def _query(text: str) -> Any:
    """QUERY is JSON, or @FILE holding it; held to the API's rules (no duplicate keys, NaN...)."""
    try:
        raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
        return parse_json(raw)
    except (OSError, PayloadError) as exc:
        typer.echo(f"mqtt-gateway: QUERY: {exc}", err=True)
        raise typer.Exit(1) from None


@endpoint_filter.command("create")
def filter_create(
    tenant_id: Tenant,
    filter_id: Filter,
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY",
            help='JSON such as \'{"metadata.city": "Kyiv", "connected": true}\', or @FILE.json (docs/fleet.md)',
        ),
    ],
    wait: Annotated[
        float, typer.Option("--wait", metavar="SECONDS", help="wait this long for the first scan (0: do not)")
    ] = 60.0,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Save a filter and wait until the gateway has evaluated it over the tenant's devices."""
    path = f"/v1/tenants/{tenant_id}/endpoint-filters"
    saved = run(data_dir, "POST", path, {"id": filter_id, "query": _query(query)})
    deadline = time.monotonic() + wait
    while saved["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        saved = run(data_dir, "GET", f"{path}/{quote(filter_id, safe='')}")
    show(saved, as_json, FILTER_COLUMNS)


@endpoint_filter.command("list")
def filter_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Every filter with its state and how many devices match it."""
    show(run(data_dir, "GET", f"/v1/tenants/{tenant_id}/endpoint-filters"), as_json, FILTER_COLUMNS)


@endpoint_filter.command("match")
def filter_match(
    tenant_id: Tenant,
    filter_id: Filter,
    limit: Annotated[int, typer.Option("--limit", help="devices per page (at most 1000)")] = 100,
    after: Annotated[str | None, typer.Option("--after", help="the `next` cursor of the previous page")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="every page, one after the other")] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The devices that match the filter now, a page at a time (the next cursor is printed last)."""
    path = f"/v1/tenants/{tenant_id}/endpoint-filters/{quote(filter_id, safe='')}/endpoints"
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
    run(data_dir, "DELETE", f"/v1/tenants/{tenant_id}/endpoint-filters/{quote(filter_id, safe='')}")
