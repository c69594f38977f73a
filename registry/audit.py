"""The audit trail: entries (management writes, applications' command invocations) appended and read a
page at a time, and refusals counted per source, actor, status and minute. Every field is cut to
`max_field_chars`, and both tables are bounded in rows as well as age, so what anyone can make the
gateway write is bounded in bytes. The bounds are kept without a scan: entries are counted per origin
once at open and then as they come and go; refusal rows are contiguous ids, so the oldest beyond the
bound are one range of the primary key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiosqlite

from .database import Database
from .models import AuditEntry, AuditRefusal, from_ms, now_ms

ORIGINS = ("api", "mqtt")
"""api: writes to the management API; mqtt: command invocations published by applications."""
PRUNE_ORIGIN = (
    "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE origin = ? ORDER BY id LIMIT ?) RETURNING id"
)
"""The oldest entries of an origin: over the (origin, id) index, as many as are over its bound."""
PRUNE_REFUSALS = "DELETE FROM audit_refusals WHERE id <= ?"
"""Refusal rows get contiguous ids (an upsert adds to a row, it takes no id): the oldest are a range."""
PRUNE_OLD = "DELETE FROM audit_log WHERE at < ? RETURNING origin"
PRUNE_EVERY = 1000
"""At most this many rows past a bound (or a tenth of the bound, if smaller) before the oldest go."""


def bounded(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _slack(bound: int) -> int:
    return max(1, min(PRUNE_EVERY, bound // 10))


@dataclass(frozen=True, slots=True)
class RefusalCount:
    """`count` more refusals of one source, actor and status in the minute starting at `minute_ms`; the
    action, target and detail are those of the first, kept when the row is new."""

    minute_ms: int
    source: str
    actor: str
    status: int
    count: int
    tenant_id: str | None
    action: str
    target: str
    detail: str | None


def _entry(row: aiosqlite.Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=from_ms(row["at"]),
        actor=row["actor"],
        action=row["action"],
        tenant_id=row["tenant_id"],
        target=row["target"],
        status=row["status"],
        detail=row["detail"],
    )


def _refusal(row: aiosqlite.Row) -> AuditRefusal:
    return AuditRefusal(
        id=row["id"],
        minute=from_ms(row["minute"]),
        source=row["source"],
        actor=row["actor"],
        status=row["status"],
        count=row["count"],
        tenant_id=row["tenant_id"],
        action=row["action"],
        target=row["target"],
        detail=row["detail"],
    )


class AuditStore:
    def __init__(
        self,
        db: Database,
        *,
        retention_days: float = 90.0,
        max_rows: int = 200_000,
        max_invocation_rows: int = 200_000,
        max_refusal_rows: int = 50_000,
        max_field_chars: int = 512,
    ) -> None:
        self._db = db
        self.set_bounds(
            retention_days=retention_days,
            max_rows=max_rows,
            max_invocation_rows=max_invocation_rows,
            max_refusal_rows=max_refusal_rows,
            max_field_chars=max_field_chars,
        )
        self.on_pruned: Callable[[str, int], None] | None = None
        """Told (what, rows) when rows go over a row bound, before their age: `api`, `mqtt`, `refusals`."""
        self._rows = dict.fromkeys(ORIGINS, 0)
        self._pruning: set[str] = set()
        self._next_refusal_prune = 0

    def set_bounds(
        self,
        *,
        retention_days: float,
        max_rows: int,
        max_invocation_rows: int,
        max_refusal_rows: int,
        max_field_chars: int,
    ) -> None:
        self.retention_ms = int(retention_days * 86_400_000)
        self.max_rows = {"api": max_rows, "mqtt": max_invocation_rows}
        self.max_refusal_rows = max_refusal_rows
        self.max_field_chars = max_field_chars

    async def open(self) -> None:
        """Counts the entries of each origin: once, over the origin index. (A file opened at an older
        schema, as migration tests do, has no such column: nothing to count.)"""
        columns = await self._db.read_all("SELECT name FROM pragma_table_info('audit_log') WHERE name = 'origin'")
        if not columns:
            return
        rows = await self._db.read_all("SELECT origin, count(*) AS n FROM audit_log GROUP BY origin")
        self._rows = dict.fromkeys(ORIGINS, 0) | {r["origin"]: int(r["n"]) for r in rows}

    def _cut(self, text: str | None) -> str | None:
        return None if text is None else bounded(text, self.max_field_chars)

    async def record(
        self,
        *,
        actor: str,
        action: str,
        tenant_id: str | None,
        target: str,
        status: int,
        detail: str | None = None,
        origin: str = "api",
    ) -> int:
        if origin not in self.max_rows:
            raise ValueError(f"unknown audit origin {origin!r}")
        now = now_ms()
        rows = await self._db.write(
            "INSERT INTO audit_log (at, actor, action, tenant_id, target, status, detail, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (now, self._cut(actor), self._cut(action), self._cut(tenant_id), self._cut(target), status,
             self._cut(detail), origin),
        )  # fmt: skip
        row_id = int(rows[0][0])
        self._rows[origin] += 1
        bound = self.max_rows[origin]
        if self._rows[origin] > bound + _slack(bound) and origin not in self._pruning:
            await self._prune_origin(origin, bound)
        if row_id % PRUNE_EVERY == 0:
            await self._prune_by_age(now)
        return row_id

    async def _prune_origin(self, origin: str, bound: int) -> None:
        """The oldest entries of `origin` beyond its bound, over the (origin, id) index."""
        self._pruning.add(origin)
        try:
            gone = await self._db.write(PRUNE_ORIGIN, (origin, max(0, self._rows[origin] - bound)))
        finally:
            self._pruning.discard(origin)
        self._rows[origin] -= len(gone)
        self._pruned(origin, len(gone))

    async def _prune_by_age(self, now: int) -> None:
        """Over the `at` index; the origins of what went keep the counts right."""
        cutoff = now - self.retention_ms
        for row in await self._db.write(PRUNE_OLD, (cutoff,)):
            self._rows[row["origin"]] = max(0, self._rows.get(row["origin"], 0) - 1)
        await self._db.write("DELETE FROM audit_refusals WHERE minute < ?", (cutoff,))

    def _pruned(self, what: str, rows: int) -> None:
        if rows and self.on_pruned is not None:
            self.on_pruned(what, rows)

    async def page(self, *, tenant_id: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Oldest first, after the entry id `after`; only the tenant's when `tenant_id` is given."""
        if tenant_id is None:
            rows = await self._db.read_all("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        else:
            rows = await self._db.read_all(
                "SELECT * FROM audit_log WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?", (tenant_id, after, limit)
            )
        return [_entry(r) for r in rows]

    # -- refusals, counted ------------------------------------------------------------------------------------

    async def count_refusals(self, counts: Sequence[RefusalCount]) -> None:
        """Adds the counts, one transaction for all; then the oldest rows beyond the bound go."""
        if not counts:
            return
        cut = self._cut
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO audit_refusals"
                " (minute, source, actor, status, count, tenant_id, action, target, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (minute, source, actor, status) DO UPDATE SET count = count + excluded.count",
                [
                    (c.minute_ms, cut(c.source), cut(c.actor), c.status, c.count, cut(c.tenant_id), cut(c.action),
                     cut(c.target), cut(c.detail))
                    for c in counts
                ],
            )  # fmt: skip
            async with conn.execute("SELECT max(id) FROM audit_refusals") as cursor:
                row = await cursor.fetchone()
            newest = int(row[0]) if row and row[0] is not None else 0
            gone = 0
            if newest >= self._next_refusal_prune:
                self._next_refusal_prune = newest + _slack(self.max_refusal_rows)
                cursor = await conn.execute(PRUNE_REFUSALS, (newest - self.max_refusal_rows,))
                gone = max(0, cursor.rowcount)
        self._pruned("refusals", gone)

    async def refusals(self, *, tenant_id: str | None = None, after: int = 0, limit: int = 100) -> list[AuditRefusal]:
        """Counted refusals in the order they first came, after the row id `after`."""
        if tenant_id is None:
            rows = await self._db.read_all(
                "SELECT * FROM audit_refusals WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            )
        else:
            rows = await self._db.read_all(
                "SELECT * FROM audit_refusals WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
                (tenant_id, after, limit),
            )
        return [_refusal(r) for r in rows]
