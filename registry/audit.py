"""The audit trail of management writes: appended, read a page at a time, pruned by age."""

from __future__ import annotations

import aiosqlite

from .database import Database
from .models import AuditEntry, from_ms, now_ms

PRUNE_EVERY = 1000
"""Rows between two prunes of entries past retention (one indexed range delete)."""


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


class AuditStore:
    def __init__(self, db: Database, *, retention_days: float = 90.0) -> None:
        self._db = db
        self.retention_ms = int(retention_days * 86_400_000)

    async def record(
        self, *, actor: str, action: str, tenant_id: str | None, target: str, status: int, detail: str | None = None
    ) -> int:
        now = now_ms()
        rows = await self._db.write(
            "INSERT INTO audit_log (at, actor, action, tenant_id, target, status, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (now, actor, action, tenant_id, target, status, detail),
        )
        row_id = int(rows[0][0])
        if row_id % PRUNE_EVERY == 0:
            await self._db.write("DELETE FROM audit_log WHERE at < ? RETURNING id", (now - self.retention_ms,))
        return row_id

    async def page(self, *, tenant_id: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """Oldest first, after the entry id `after`; only the tenant's when `tenant_id` is given."""
        if tenant_id is None:
            rows = await self._db.read_all("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        else:
            rows = await self._db.read_all(
                "SELECT * FROM audit_log WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?", (tenant_id, after, limit)
            )
        return [_entry(r) for r in rows]
