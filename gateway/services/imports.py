"""Batch registration from CSV: the file is checked as it is uploaded (header, size) and becomes a
job; one runner works the jobs in order, a chunk of rows per registry transaction, so CONNECTs and
10/EPMP requests keep being answered between chunks and a restart resumes where the last chunk
committed (registry/imports.py).

Columns: `deviceId` (required), `group` (empty: default), `appVersion`, `credential`
(`token:<value>` | `token:generate` | `password:<authId>:<password>` | empty), then any `attr.<key>`.
A chosen token must be strong (registry/identifiers.py); a password device is named in topics by its
device id (registry/imports.py gives it that bound token).
Row numbers are the file's line numbers (the header is line 1; a quoted field may span lines).
Password rows run at the password hash rate (argon2id, one
at a time, so device logins keep the other hash workers).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from dataclasses import dataclass, replace

from registry import Registry
from registry.device_search import ATTR_KEY
from registry.identifiers import (
    bearer_token_problem,
    generate_token,
    is_valid_app_version,
    is_valid_auth_id,
    is_valid_id,
    is_valid_token,
)
from registry.imports import ImportRow
from registry.models import ImportJob, ImportState

from ..auth.hashing import PasswordHasher
from ..node.settings import GatewaySettings
from .import_secrets import FORGOTTEN, PASSWORD, HeldPasswords, Redaction, held_cost

log = logging.getLogger(__name__)

COLUMNS = ("deviceId", "group", "appVersion", "credential")
ATTR = "attr."
MAX_ATTRIBUTES, MAX_ATTR_VALUE, MAX_PASSWORD = 64, 1024, 1024
CHUNK_ROWS = 100
"""Rows per transaction: small enough that a CONNECT waiting for the writer waits milliseconds."""
HASHING_PER_CHUNK_S = 1.0
"""A chunk of password rows closes after this much hashing, so progress shows at the hash rate."""

TEMPLATE = """deviceId,group,appVersion,credential,attr.model,attr.site
kettle-1,default,kettle_v1,token:generate,k2,kyiv
kettle-2,default,kettle_v1,token:Kettle2-own-token_7fQ9xWm3Lp,k2,lviv
kettle-3,default,kettle_v1,password:kettle-3:change-me,k3,
sensor-1,default,,,,
"""
"""Served at GET /v1/device-imports/template.csv and printed by `mqtt-gateway device import --template`."""


class CsvRefused(Exception):
    """The upload as a whole cannot be a job (not UTF-8, no deviceId column, an unknown column...)."""


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    header: list[str]
    records: list[tuple[int, list[str]]]
    """(the file line it starts on, its fields) of every non-blank data row."""
    password_rows: int
    stored: bytes
    """What the registry keeps of the upload: the file with its passwords cut out (import_secrets.py)."""
    held: dict[int, str]
    """line -> the password cut out of that row."""


MAX_COLUMNS = len(COLUMNS) + MAX_ATTRIBUTES


def parse(data: bytes, max_rows: int | None) -> ParsedCsv:
    """Read as a stream: blank lines are dropped as they come, and reading stops past `max_rows`
    lines (blank ones count), so no upload costs more than its allowance. CPU work: run it off the
    event loop (asyncio.to_thread)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvRefused("the file is not UTF-8") from None
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)
    redaction = Redaction(text, MAX_PASSWORD)
    try:
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise CsvRefused("the file is empty: it needs a header row naming the columns")
        _check_header(header)
        redaction.keep(lines[: reader.line_num])
        redaction.credential_at = header.index("credential") if "credential" in header else None
        redaction.cut_at = tuple(header.index(c) for c in COLUMNS if c in header)
        records: list[tuple[int, list[str]]] = []
        start = reader.line_num + 1
        for count, record in enumerate(reader, start=1):
            if max_rows is not None and count > max_rows:
                raise CsvRefused(f"more than {max_rows:,} rows")
            if any(field.strip() for field in record):
                records.append((start, record))
                redaction.record(lines[start - 1 : reader.line_num], start, record, len(header))
            else:
                redaction.keep(lines[start - 1 : reader.line_num])
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CsvRefused(f"not valid CSV: {exc}") from None
    at = redaction.credential_at
    width = len(header)
    passwords = sum(1 for _, r in records if at is not None and len(r) == width and r[at].strip().startswith(PASSWORD))
    return ParsedCsv(header, records, passwords, redaction.stored(data), redaction.held)


def _check_header(header: list[str]) -> None:
    if len(header) > MAX_COLUMNS:
        raise CsvRefused(
            f"{len(header)} columns; at most {MAX_COLUMNS} ({', '.join(COLUMNS)} and {MAX_ATTRIBUTES} attr.<key>)"
        )
    if "deviceId" not in header:
        raise CsvRefused("the header has no deviceId column")
    unknown = [
        h for h in header if h not in COLUMNS and not (h.startswith(ATTR) and ATTR_KEY.fullmatch(h[len(ATTR) :]))
    ]
    if unknown:
        raise CsvRefused(f"unknown column(s): {', '.join(unknown[:5])} (known: {', '.join(COLUMNS)}, attr.<key>)")
    if len(set(header)) != len(header):
        raise CsvRefused("a column is named twice")


@dataclass(frozen=True, slots=True)
class _Prepared:
    row: ImportRow
    password: str | None = None


def prepare(
    header: list[str],
    record: list[str],
    row_number: int,
    seen: dict[str, int],
    held_password: str | None = None,
    *,
    forgotten: bool = False,
) -> _Prepared:
    """One row checked on its own (and against the rows before it in the file). A password row as
    stored has its password cut out: `held_password` is it, or `forgotten` (a restart lost it)."""
    if len(record) != len(header):
        return _Prepared(ImportRow(row_number, "", error=f"{len(record)} fields; the header has {len(header)}"))
    fields = dict(zip(header, (f.strip() for f in record), strict=True))
    device_id = fields["deviceId"]

    def refused(message: str) -> _Prepared:
        return _Prepared(ImportRow(row_number, device_id, error=message))

    if not is_valid_id(device_id):
        return refused(f"invalid deviceId {device_id[:64]!r}")
    if device_id in seen:
        return refused(f"deviceId {device_id!r} again (first on row {seen[device_id]})")
    seen[device_id] = row_number
    group = fields.get("group") or "default"
    if not is_valid_id(group):
        return refused(f"invalid group {group[:64]!r}")
    app_version = fields.get("appVersion") or None
    if app_version is not None and not is_valid_app_version(app_version):
        return refused(f"invalid appVersion {app_version[:64]!r}")
    attributes = {k[len(ATTR) :]: v for k, v in fields.items() if k.startswith(ATTR) and v}
    if len(attributes) > MAX_ATTRIBUTES or any(len(v) > MAX_ATTR_VALUE for v in attributes.values()):
        return refused(f"at most {MAX_ATTRIBUTES} attributes of at most {MAX_ATTR_VALUE} characters")
    base = ImportRow(row_number, device_id, group, app_version, attributes)
    credential = fields.get("credential", "")
    if not credential:
        return _Prepared(base)
    kind, _, value = credential.partition(":")
    if kind == "token" and value == "generate":
        return _Prepared(replace(base, credential="generate", token=generate_token()))
    if kind == "token":
        if not is_valid_token(value):
            return refused("invalid token: 1-256 characters, none of + # / . @, whitespace or controls")
        if (weakness := bearer_token_problem(value)) is not None:
            return refused(f"token too weak: {weakness}")
        return _Prepared(replace(base, credential="token", token=value))
    if kind == "password":
        auth_id, sep, password = value.partition(":")
        if sep and not password and held_password is not None:
            password = held_password
        elif sep and not password and forgotten:
            return refused(FORGOTTEN)
        if not sep or not is_valid_auth_id(auth_id) or not 1 <= len(password) <= MAX_PASSWORD:
            return refused("credential password:<authId>:<password> wants a valid auth-id and a password")
        return _Prepared(replace(base, credential="password", auth_id=auth_id), password)
    return refused("credential must be token:<value>, token:generate, password:<authId>:<password> or empty")


class ImportRunner:
    def __init__(self, registry: Registry, settings: GatewaySettings, hasher: PasswordHasher) -> None:
        self._registry = registry
        self._settings = settings
        self._hasher = hasher
        self._held = HeldPasswords(settings.import_max_held_password_bytes)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Jobs a previous run left queued or half done are resumed, oldest first."""
        for job in await self._registry.imports.open_jobs():
            if job.state == ImportState.RUNNING:
                log.warning("resuming device import %s after row %d of %d", job.id, job.processed, job.total)
            if job.password_rows:  # what a previous process held in memory is gone
                log.warning("device import %s: its password rows not yet done fail (never stored)", job.id)
            self._queue.put_nowait(job.id)
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, tenant_id: str, data: bytes) -> ImportJob:
        """Raises CsvRefused (the file as a whole), TooManyHeld (its passwords) or NotFound (the tenant).
        The registry is given the file without its passwords; they wait here to be hashed."""
        parsed = await asyncio.to_thread(parse, data, self._settings.import_max_rows)
        cost = sum(held_cost(p) for p in parsed.held.values())
        self._held.reserve(cost)
        try:
            job = await self._registry.imports.create(
                tenant_id, parsed.stored, len(parsed.records), parsed.password_rows
            )
        except BaseException:
            self._held.release(cost)
            raise
        self._held.attach(job.id, parsed.held)
        self._queue.put_nowait(job.id)
        return job

    async def cancel(self, tenant_id: str, job_id: str) -> ImportJob:
        """The job stops after the chunk it is writing; the passwords it still held go at once."""
        job = await self._registry.imports.cancel(tenant_id, job_id)
        self._held.forget(job_id)
        return job

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("device import %s failed", job_id)
                await self._registry.imports.finish(job_id, ImportState.FAILED, f"internal error: {exc!r}"[:500])
            finally:
                self._held.forget(job_id)

    async def _run(self, job_id: str) -> None:
        loaded = await self._registry.imports.load(job_id)
        if loaded is None or not await self._registry.imports.start(job_id):
            return  # cancelled (or its tenant deleted) while it waited
        job, data = loaded
        parsed = await asyncio.to_thread(parse, data, None)  # its bound was checked at the upload
        held = self._held.knows(job_id)
        header, records = parsed.header, parsed.records
        seen: dict[str, int] = {}
        for line, record in records[: job.processed]:  # rows done before a restart still count as seen
            if len(record) == len(header):
                seen.setdefault(record[header.index("deviceId")].strip(), line)
        index = job.processed
        while index < len(records):
            chunk: list[ImportRow] = []
            hashing_since = time.monotonic()
            while index < len(records) and len(chunk) < CHUNK_ROWS:
                line, record = records[index]
                password = self._held.take(job_id, line) if held else None
                prepared = prepare(header, record, line, seen, password, forgotten=not held)
                row = prepared.row
                if prepared.password is not None and row.error is None:
                    row = replace(row, password_hash=await self._hasher.hash(prepared.password))
                chunk.append(row)
                index += 1
                if prepared.password is not None and time.monotonic() - hashing_since > HASHING_PER_CHUNK_S:
                    break
            if not await self._registry.imports.apply_chunk(job, chunk, index, node=self._settings.node_id):
                return  # cancelled: the chunks committed stay, nothing more is written
            job = job.model_copy(update={"processed": index})
            await asyncio.sleep(0)  # CONNECTs and requests waiting for the loop go first
        await self._registry.imports.finish(job_id, ImportState.SUCCEEDED)
