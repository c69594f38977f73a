"""`mqtt-gateway device import TENANT FILE.csv`: upload, follow the job with a progress bar, report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .admin import JsonOption, show
from .client import run
from .serve import DataDirOption

POLL_S = 0.5


def register(device_commands: typer.Typer) -> None:
    """`device import` belongs with the other device commands (gateway/cli/admin.py)."""
    device_commands.command("import")(device_import)


def device_import(
    tenant_id: Annotated[str, typer.Argument(metavar="TENANT")],
    file: Annotated[
        Path | None, typer.Argument(metavar="FILE.csv", dir_okay=False, help="the devices, one per row")
    ] = None,
    tokens_out: Annotated[
        Path | None, typer.Option("--tokens-out", help="write generated tokens here (deviceId,token; mode 0600)")
    ] = None,
    template: Annotated[bool, typer.Option("--template", help="print a CSV template and exit")] = False,
    errors: Annotated[int, typer.Option("--errors", help="row errors to print at most")] = 100,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register devices from a CSV as a job: a progress bar while it runs, then the counts and row errors.
    Exits 1 when any row failed (the valid rows are registered all the same)."""
    if template:
        typer.echo(run(data_dir, "GET", "/v1/device-imports/template.csv", text=True), nl=False)
        return
    if file is None or not file.is_file():
        typer.echo("mqtt-gateway: give the CSV file to import (or --template for a start)", err=True)
        raise typer.Exit(2)
    tokens_file = _open_private(tokens_out) if tokens_out is not None else None  # before the tokens exist
    accepted = run(data_dir, "POST", f"/v1/tenants/{tenant_id}/device-imports", content=file.read_bytes())
    path = f"/v1/tenants/{tenant_id}/device-imports/{accepted['jobId']}"
    job = _follow(data_dir, path, accepted["total"], quiet=as_json)
    job = run(data_dir, "GET", f"{path}?errors={errors}")
    if tokens_file is not None:
        with tokens_file:
            if job["tokens"] == "available":
                tokens_file.write(run(data_dir, "GET", f"{path}/tokens", text=True))
                job["tokens"] = "downloaded"
    if as_json:
        show(job, True)
    else:
        _summary(job, tokens_out)
    if job["state"] != "succeeded" or job["failed"]:
        raise typer.Exit(1)


def _follow(data_dir: Path | None, path: str, total: int, *, quiet: bool) -> dict[str, Any]:
    console = Console(stderr=True)
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, TimeRemainingColumn(), console=console, disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("rows", total=total, rate="")
        started = time.monotonic()
        while True:
            job: dict[str, Any] = run(data_dir, "GET", f"{path}?errors=0")
            elapsed = max(time.monotonic() - started, 1e-3)
            note = f"{job['processed'] / elapsed:,.0f} rows/s"
            if job["passwordRows"]:
                note += f" ({job['passwordRows']:,} password rows run at the argon2 hash rate)"
            bar.update(task, completed=job["processed"], rate=note)
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(POLL_S)


def _open_private(path: Path) -> TextIO:
    """Opened (0600, never through a symlink) before anything is uploaded: tokens downloaded into a
    file that cannot be written would be lost for good (the download is once)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: tightened before writing
    except OSError as exc:
        typer.echo(f"mqtt-gateway: cannot write --tokens-out {path}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    return os.fdopen(fd, "w", encoding="utf-8")


def _summary(job: dict[str, Any], tokens_out: Path | None) -> None:
    typer.echo(
        f"{job['state']}: {job['total']:,} rows, {job['created']:,} created, {job['unchanged']:,} unchanged,"
        f" {job['failed']:,} failed"
    )
    for error in job["errors"]:
        typer.echo(f"  row {error['row']}: {error['deviceId'] or '-'}: {error['message']}")
    if job["failed"] > len(job["errors"]):
        typer.echo(f"  ... and {job['failed'] - len(job['errors']):,} more (GET .../device-imports/{job['jobId']})")
    if tokens_out is not None and job["tokens"] == "downloaded":
        typer.echo(f"generated tokens written to {tokens_out} (mode 0600; the gateway no longer has them)")
    elif job["tokens"] == "available":
        typer.echo("generated tokens are waiting: pass --tokens-out FILE to save them")
