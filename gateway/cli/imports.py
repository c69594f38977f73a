"""`mqtt-gateway device import TENANT FILE.csv`: upload, follow the job with a progress bar, report;
`mqtt-gateway import-job ...`: the tenant's import jobs afterwards."""

import os
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from .client import api_path, fail, run
from .options import DataDirOption, JsonOption, Tenant
from .output import show
from .typer_group import subgroup

POLL_S = 0.5
import_job = subgroup("import-job", "Device import jobs and the tokens they made.")
Job = Annotated[str, typer.Argument(metavar="JOB", help="the job's id")]
JOB_COLUMNS = ["jobId", "state", "total", "processed", "created", "unchanged", "failed", "tokens", "createdAt"]
TokensOut = Annotated[
    Path | None,
    typer.Option("--tokens-out", metavar="FILE", help="write generated tokens here (deviceId,token; mode 0600)"),
]


def device_import(
    tenant_id: Tenant,
    file: Annotated[
        Path | None, typer.Argument(metavar="FILE.csv", dir_okay=False, help="the devices, one per row")
    ] = None,
    tokens_out: TokensOut = None,
    template: Annotated[bool, typer.Option("--template", help="print a CSV template and exit")] = False,
    errors: Annotated[int, typer.Option("--errors", metavar="N", help="row errors to print at most")] = 100,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register devices from a CSV, as a job.

    A progress bar while it runs, then the counts and row errors. Exits 1 when any row failed (the
    valid rows are registered all the same)."""
    if template:
        typer.echo(run(data_dir, "GET", "/v1/device-imports/template.csv", text=True), nl=False)
        return
    if file is None:
        raise fail("give the CSV file to import (or --template for a start)", 2)
    imports_path = api_path("/v1/tenants/{}/device-imports", tenant_id)
    content = _read_csv(file)
    tokens_file = _open_private(tokens_out) if tokens_out is not None else None  # before the tokens exist
    accepted = run(data_dir, "POST", imports_path, content=content)
    path = api_path("/v1/tenants/{}/device-imports/{}", tenant_id, accepted["jobId"])
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


def _read_csv(file: Path) -> bytes:
    """The file, or one line that names it and says why not (missing, a directory, unreadable)."""
    try:
        return file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read the CSV file {file}: {exc.strerror or exc}", 2) from None


def _follow(data_dir: Path | None, path: str, total: int, *, quiet: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
        raise fail(f"cannot write --tokens-out {path}: {exc.strerror}", 2) from None
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


@import_job.command("list")
def import_job_list(tenant_id: Tenant, data_dir: DataDirOption = None, as_json: JsonOption = False) -> None:
    """The tenant's newest 100 import jobs (without their row errors)."""
    show(run(data_dir, "GET", api_path("/v1/tenants/{}/device-imports", tenant_id)), as_json, JOB_COLUMNS)


@import_job.command("get")
def import_job_get(
    tenant_id: Tenant,
    job_id: Job,
    errors: Annotated[int, typer.Option("--errors", metavar="N", help="row errors to print at most")] = 100,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's state and counts, then its first row errors."""
    job = run(data_dir, "GET", api_path("/v1/tenants/{}/device-imports/{}", tenant_id, job_id) + f"?errors={errors}")
    if as_json:
        show(job, True)
    else:
        _summary(job, None)


@import_job.command("cancel")
def import_job_cancel(
    tenant_id: Tenant, job_id: Job, data_dir: DataDirOption = None, as_json: JsonOption = False
) -> None:
    """Stop a queued or running job after the chunk it is writing; rows committed stay."""
    job = run(data_dir, "DELETE", api_path("/v1/tenants/{}/device-imports/{}", tenant_id, job_id))
    show(job, as_json, JOB_COLUMNS)


@import_job.command("tokens")
def import_job_tokens(
    tenant_id: Tenant,
    job_id: Job,
    tokens_out: Annotated[
        Path, typer.Option("--tokens-out", metavar="FILE", help="write them here (deviceId,token; mode 0600)")
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Download the tokens a job generated, once.

    Into a private file (mode 0600): the gateway forgets them."""
    path = api_path("/v1/tenants/{}/device-imports/{}/tokens", tenant_id, job_id)
    out = _open_private(tokens_out)  # before the download: the tokens come once
    try:
        with out:
            out.write(run(data_dir, "GET", path, text=True))
    except typer.Exit:
        tokens_out.unlink(missing_ok=True)
        raise
    typer.echo(f"generated tokens written to {tokens_out} (mode 0600; the gateway no longer has them)")
