"""`mqtt-gateway metrics`, `mqtt-gateway audit` and `mqtt-gateway whitelist reload`: running the gateway."""

from typing import Annotated

import typer

from .client import run
from .options import DataDirOption, JsonOption
from .output import pages, show
from .typer_group import subgroup

whitelist = subgroup("whitelist", "The EPMX metadata whitelist file.")


def register(app: typer.Typer) -> None:
    app.command("metrics")(metrics)
    app.command("audit")(audit)


def metrics(
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="the Prometheus text of GET /metrics, as it is, instead")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The node's counters (GET /v1/metrics).

    CONNECTs and refusals by reason, 1/KP requests, bytes...; --prometheus prints GET /metrics instead."""
    if prometheus:
        typer.echo(run(data_dir, "GET", "/metrics", text=True), nl=False)
        return
    counters = run(data_dir, "GET", "/v1/metrics")
    show(
        counters if as_json else [{"metric": k, "value": v} for k, v in counters.items()], as_json, ["metric", "value"]
    )


def audit(
    tenant: Annotated[str | None, typer.Option("--tenant", metavar="TENANT", help="only writes to this tenant")] = None,
    after: Annotated[
        int | None, typer.Option("--after", metavar="CURSOR", help="the `next` cursor of the previous page")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="entries per page (1-1000)")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="every page, one after the other")] = False,
    refusals: Annotated[
        bool, typer.Option("--refusals", help="the counted refusals instead: per address, actor, status and minute")
    ] = False,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit trail of API writes and MQTT invocations, oldest first.

    Who made each write, on what, and how it ended; the cursor of the next page is printed last.
    --refusals: writes without the admin token and refused invocations, counted per minute."""
    params = {"tenant": tenant, "limit": limit}
    if refusals:
        columns = ["id", "minute", "source", "actor", "status", "count", "action", "target", "detail"]
        pages(data_dir, "/v1/audit/refusals", params, "refusals", columns, after, all_pages, as_json)
        return
    columns = ["id", "at", "actor", "action", "target", "status", "detail"]
    pages(data_dir, "/v1/audit", params, "entries", columns, after, all_pages, as_json)


@whitelist.command("reload")
def whitelist_reload(data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """Re-read the whitelist file, as SIGHUP does.

    Live sessions stay connected; prints the app versions it lists."""
    show(run(data_dir, "POST", "/v1/epmx/whitelist/reload"), as_json, ["appVersions"])
