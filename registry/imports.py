"""Batch registration jobs: a CSV upload becomes devices (with credentials) a chunk at a time. Each
chunk is one transaction together with the job's progress, so a crash leaves no half-created device
and a restart resumes after the last committed chunk. The CSV itself is parsed and checked by
gateway/services/imports.py; what the registry decides here is what needs the registry (existing devices,
groups, tombstones, taken tokens and auth-ids, the tenant's device limit)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from .database import Database
from .devices import require_tenant
from .errors import NotFound
from .events import emit_many
from .models import DeviceState, ImportJob, ImportRowError, ImportState, from_ms, from_ms_or_none, now_ms

MAX_ERRORS_KEPT = 10_000
"""Row errors kept per job (all are counted)."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One data row, parsed and checked on its own (gateway/services/imports.py)."""

    row: int
    """The CSV line it came from, the header being row 1."""
    device_id: str
    group: str = "default"
    app_version: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    credential: str = "none"
    """none | token (the given `token`) | generate (`token` generated for it) | password"""
    token: str | None = None
    auth_id: str | None = None
    password_hash: str | None = None
    error: str | None = None
    """Refused before the registry was asked (malformed, a duplicate in the file)."""


def _job(row: aiosqlite.Row) -> ImportJob:
    return ImportJob(
        id=row["id"],
        tenant_id=row["tenant_id"],
        state=ImportState(row["state"]),
        total=row["total"],
        processed=row["next_row"],
        created=row["created"],
        unchanged=row["unchanged"],
        failed=row["failed"],
        password_rows=row["password_rows"],
        message=row["message"],
        tokens=row["tokens"],
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
        finished_at=from_ms_or_none(row["finished_at"]),
    )


class ImportStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, tenant_id: str, csv: bytes, total: int, password_rows: int) -> ImportJob:
        job_id = uuid.uuid4().hex
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            await tx.execute(
                "INSERT INTO device_imports (id, tenant_id, state, csv, total, password_rows, created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, tenant_id, csv, total, password_rows, now, now),
            )
        return await self.get(tenant_id, job_id)

    async def get(self, tenant_id: str, job_id: str) -> ImportJob:
        row = await self._db.read_one(
            "SELECT * FROM device_imports WHERE tenant_id = ? AND id = ?", (tenant_id, job_id)
        )
        if row is None:
            await require_tenant(self._db.reader, tenant_id)
            raise NotFound(f"import job {job_id!r} not found in tenant {tenant_id!r}", field="job")
        return _job(row)

    async def of_tenant(self, tenant_id: str, limit: int = 100) -> list[ImportJob]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all(
            "SELECT * FROM device_imports WHERE tenant_id = ? ORDER BY created_at DESC LIMIT ?", (tenant_id, limit)
        )
        return [_job(r) for r in rows]

    async def errors(self, job_id: str, limit: int) -> list[ImportRowError]:
        rows = await self._db.read_all(
            "SELECT row, device_id, message FROM device_import_errors WHERE job_id = ? ORDER BY row LIMIT ?",
            (job_id, limit),
        )
        return [ImportRowError(row=r["row"], device_id=r["device_id"], message=r["message"]) for r in rows]

    async def open_jobs(self) -> list[ImportJob]:
        """Jobs queued or interrupted (a restart), oldest first."""
        rows = await self._db.read_all(
            "SELECT * FROM device_imports WHERE state IN ('queued', 'running') ORDER BY created_at"
        )
        return [_job(r) for r in rows]

    async def load(self, job_id: str) -> tuple[ImportJob, bytes] | None:
        """An open job with its CSV; None once it has ended (or its tenant is gone)."""
        row = await self._db.read_one(
            "SELECT * FROM device_imports WHERE id = ? AND state IN ('queued', 'running')", (job_id,)
        )
        return None if row is None else (_job(row), bytes(row["csv"] or b""))

    async def start(self, job_id: str) -> bool:
        rows = await self._db.write(
            "UPDATE device_imports SET state = 'running', updated_at = ?"
            " WHERE id = ? AND state IN ('queued', 'running') RETURNING id",
            (now_ms(), job_id),
        )
        return bool(rows)

    async def finish(self, job_id: str, state: ImportState, message: str | None = None) -> None:
        """The job ends; its CSV goes (the counts, errors and generated tokens stay)."""
        now = now_ms()
        await self._db.write(
            "UPDATE device_imports SET state = ?, message = COALESCE(?, message), csv = NULL, updated_at = ?,"
            " finished_at = ? WHERE id = ? AND state IN ('queued', 'running') RETURNING id",
            (state.value, message, now, now, job_id),
        )

    async def cancel(self, tenant_id: str, job_id: str) -> ImportJob:
        """A queued or running job stops after the chunk it is writing; the rows committed stay."""
        await self.get(tenant_id, job_id)
        await self.finish(job_id, ImportState.CANCELLED, "cancelled by an operator")
        return await self.get(tenant_id, job_id)

    async def take_tokens(self, tenant_id: str, job_id: str) -> list[tuple[str, str]] | None:
        """The generated (device id, token) pairs, once: None when there are none or they were taken."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT tokens FROM device_imports WHERE tenant_id = ? AND id = ?", (tenant_id, job_id)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"import job {job_id!r} not found in tenant {tenant_id!r}", field="job")
            if row[0] != "available":
                return None
            pairs = await tx.execute_fetchall(
                "DELETE FROM device_import_tokens WHERE job_id = ? RETURNING row, device_id, token", (job_id,)
            )
            await tx.execute(
                "UPDATE device_imports SET tokens = 'downloaded', updated_at = ? WHERE id = ?", (now_ms(), job_id)
            )
        return [(r[1], r[2]) for r in sorted(pairs, key=lambda r: r[0])]

    async def apply_chunk(self, job: ImportJob, rows: list[ImportRow], next_row: int, *, node: str) -> bool:
        """Rows `job.processed` .. `next_row` in one transaction with the job's progress. False when
        the job is no longer running (cancelled, its tenant gone): nothing is written."""
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT state, failed FROM device_imports WHERE id = ?", (job.id,)) as cur:
                state = await cur.fetchone()
            if state is None or state["state"] != ImportState.RUNNING.value:
                return False
            decided = await _Chunk(tx, job.tenant_id, rows).decide()
            await decided.write(tx, job.tenant_id, node)
            kept = max(0, MAX_ERRORS_KEPT - state["failed"])
            await tx.executemany(
                "INSERT INTO device_import_errors (job_id, row, device_id, message) VALUES (?, ?, ?, ?)",
                [(job.id, r.row, r.device_id or None, message) for r, message in decided.errors[:kept]],
            )
            generated = [(job.id, r.row, r.device_id, r.token) for r in decided.new if r.credential == "generate"]
            await tx.executemany(
                "INSERT INTO device_import_tokens (job_id, row, device_id, token) VALUES (?, ?, ?, ?)", generated
            )
            await tx.execute(
                "UPDATE device_imports SET next_row = ?, created = created + ?, unchanged = unchanged + ?,"
                " failed = failed + ?, tokens = CASE WHEN ? THEN 'available' ELSE tokens END, updated_at = ?"
                " WHERE id = ?",
                (
                    next_row,
                    len(decided.new),
                    decided.unchanged,
                    len(decided.errors),
                    bool(generated),
                    now_ms(),
                    job.id,
                ),
            )
        return True


class _Chunk:
    """What becomes of each row of a chunk, decided against the registry inside the transaction."""

    def __init__(self, tx: aiosqlite.Connection, tenant_id: str, rows: list[ImportRow]) -> None:
        self._tx = tx
        self._tenant = tenant_id
        self._rows = rows
        self.new: list[ImportRow] = []
        self.unchanged = 0
        self.errors: list[tuple[ImportRow, str]] = []

    async def _set(self, sql: str, values: list[str], *args: object) -> dict[str, Any]:
        """key -> row of `sql` (whose `?...` takes `values`) for the values given."""
        if not values:
            return {}
        marks = ",".join("?" * len(values))
        rows = await self._tx.execute_fetchall(sql.replace("{marks}", marks), (*args, *values))
        return {r[0]: r for r in rows}

    async def decide(self) -> _Chunk:
        tenant, rows = self._tenant, [r for r in self._rows if r.error is None]
        self.errors = [(r, r.error) for r in self._rows if r.error is not None]
        ids = [r.device_id for r in rows]
        tenant_row = await require_tenant(self._tx, tenant)
        groups = {
            r[0] for r in await self._tx.execute_fetchall("SELECT id FROM device_groups WHERE tenant_id = ?", (tenant,))
        }
        existing = await self._set(
            "SELECT id, grp, app_version, attributes FROM devices WHERE tenant_id = ? AND id IN ({marks})", ids, tenant
        )
        held: dict[str, set[tuple[str, str]]] = {}
        if ids:
            marks = ",".join("?" * len(ids))
            for row in await self._tx.execute_fetchall(
                f"SELECT device_id, kind, auth_id FROM credentials WHERE tenant_id = ? AND device_id IN ({marks})",  # noqa: S608
                (tenant, *ids),
            ):
                held.setdefault(row[0], set()).add((row[1], row[2]))
        deleted = await self._set(
            "SELECT device_id FROM device_tombstones WHERE tenant_id = ? AND device_id IN ({marks})", ids, tenant
        )
        # A chosen (bearer) token collides with a bearer token of any tenant or any token of this one;
        # a password device's name (its id, a bound token) only with a token of this tenant.
        tokens = [r.token for r in rows if r.credential == "token" and r.token]
        taken_tokens = await self._set(
            "SELECT auth_id FROM credentials WHERE kind = 'token' AND (certificate_bound = 0 OR tenant_id = ?)"
            " AND auth_id IN ({marks})",
            tokens,
            tenant,
        )
        taken_names = await self._set(
            "SELECT auth_id FROM credentials WHERE tenant_id = ? AND kind = 'token' AND auth_id IN ({marks})",
            [r.device_id for r in rows if r.credential == "password"],
            tenant,
        )
        auth_ids = [r.auth_id for r in rows if r.credential == "password" and r.auth_id]
        taken_auth = await self._set(
            "SELECT auth_id, device_id FROM credentials"
            " WHERE tenant_id = ? AND kind = 'password' AND auth_id IN ({marks})",
            auth_ids,
            tenant,
        )
        accounts = await self._set(
            "SELECT id FROM service_accounts WHERE tenant_id = ? AND id IN ({marks})", auth_ids, tenant
        )
        room = None
        if tenant_row["max_devices"] is not None:
            count = await self._tx.execute_fetchall("SELECT count(*) FROM devices WHERE tenant_id = ?", (tenant,))
            room = tenant_row["max_devices"] - next(iter(count))[0]
        claimed_tokens: set[str] = set()
        claimed_auth: set[str] = set()
        for r in rows:
            if r.device_id in existing:
                problem = _differs(r, existing[r.device_id], held.get(r.device_id, set()))
                if problem:
                    self.errors.append((r, f"conflicts with the existing device {r.device_id!r}: {problem}"))
                else:
                    self.unchanged += 1
                continue
            problem = None
            if r.device_id in deleted:
                problem = f"device id {r.device_id!r} belonged to a deleted device"
            elif r.group not in groups:
                problem = f"group {r.group!r} does not exist"
            elif r.credential == "token" and (r.token in taken_tokens or r.token in claimed_tokens):
                problem = "the token is already in use"
            elif r.credential == "password" and (r.device_id in taken_names or r.device_id in claimed_tokens):
                problem = f"device id {r.device_id!r} is another device's endpoint token in this tenant"
            elif r.credential == "password" and r.auth_id in accounts:
                problem = f"auth-id {r.auth_id!r} is a service account's username"
            elif r.credential == "password" and (r.auth_id in taken_auth or r.auth_id in claimed_auth):
                problem = f"auth-id {r.auth_id!r} belongs to another device"
            elif room is not None and len(self.new) >= room:
                problem = f"tenant {tenant!r} has reached its device limit"
            if problem:
                self.errors.append((r, problem))
                continue
            if r.token:
                claimed_tokens.add(r.token)
            if r.credential == "password":
                claimed_tokens.add(r.device_id)
            if r.auth_id:
                claimed_auth.add(r.auth_id)
            self.new.append(r)
        self.errors.sort(key=lambda e: e[0].row)
        return self

    async def write(self, tx: aiosqlite.Connection, tenant: str, node: str) -> None:
        now = now_ms()
        if not self.new:
            return

        def state(r: ImportRow) -> str:
            return (DeviceState.ENROLLED if r.credential == "none" else DeviceState.REGISTERED).value

        await tx.executemany(
            "INSERT INTO devices (tenant_id, id, grp, app_version, attributes, state, enabled, auto_provisioned,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, 0, ?, ?)",
            [
                (tenant, r.device_id, r.group, r.app_version, json.dumps(r.attributes), state(r), now, now)
                for r in self.new
            ],
        )
        await tx.executemany(
            "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, secret, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'inactive', ?, ?)",
            [
                (
                    tenant,
                    r.device_id,
                    "password" if r.credential == "password" else "token",
                    r.auth_id if r.credential == "password" else r.token,
                    r.password_hash,
                    now,
                    now,
                )
                for r in self.new
                if r.credential != "none"
            ],
        )
        await tx.executemany(  # a password device's name in topics: its device id, a token bound to it
            "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, certificate_bound, created_at,"
            " updated_at) VALUES (?, ?, 'token', ?, 'active', 1, ?, ?)",
            [(tenant, r.device_id, r.device_id, now, now) for r in self.new if r.credential == "password"],
        )
        history: list[tuple[str, str, int, str, str]] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for r in self.new:
            created = {"state": DeviceState.ENROLLED.value, "group": r.group, "imported": True}
            history.append((tenant, r.device_id, now, "created", json.dumps(created)))
            events.append(
                ("endpoint/lifecycle/registered", {"endpointId": r.device_id, "appVersionName": r.app_version})
            )
            if r.credential != "none":
                change = {"previousState": "enrolled", "state": "registered", "reason": "credential added"}
                history.append((tenant, r.device_id, now, "state-changed", json.dumps(change)))
                events.append(
                    (
                        "endpoint/lifecycle/state-changed",
                        {"endpointId": r.device_id, "appVersionName": r.app_version, **change},
                    )
                )
        await tx.executemany(
            "INSERT INTO device_history (tenant_id, device_id, at, event, detail) VALUES (?, ?, ?, ?, ?)", history
        )
        await emit_many(tx, tenant, node, events)


def _differs(r: ImportRow, device: aiosqlite.Row, credentials: set[tuple[str, str]]) -> str | None:
    """Why a row does not describe the device as it is (None: it does, the row is unchanged)."""
    if device["grp"] != r.group:
        return f"its group is {device['grp']!r}, not {r.group!r}"
    if device["app_version"] != r.app_version:
        return f"its app version is {device['app_version']!r}, not {r.app_version!r}"
    if json.loads(device["attributes"]) != r.attributes:
        return "its attributes differ"
    if r.credential == "token" and ("token", r.token) not in credentials:
        return "it does not hold that token"
    if r.credential == "generate" and not any(kind == "token" for kind, _ in credentials):
        return "it has no token"
    if r.credential == "password" and ("password", r.auth_id) not in credentials:
        return f"it has no password auth-id {r.auth_id!r}"
    return None
