"""The event outbox: rows written with the change they describe, published later, at least once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from .database import Database
from .models import now_ms
from .recent import first_id_since


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    tenant_id: str
    subject: str
    payload: dict[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def waiting_tenants(self) -> list[str]:
        """Tenants with a service account and at least one undelivered event: the only ones worth a
        look. One index probe per such tenant; a tenant without service accounts is never read,
        however large its backlog."""
        rows = await self._db.read_all(
            "SELECT tenant_id FROM (SELECT DISTINCT tenant_id FROM service_accounts) sa WHERE EXISTS"
            " (SELECT 1 FROM outbox o WHERE o.tenant_id = sa.tenant_id AND o.published_at IS NULL)"
        )
        return [r["tenant_id"] for r in rows]

    async def backlog(self) -> dict[str, tuple[int, int]]:
        """tenant -> (undelivered events, created_at ms of the oldest) for tenants with a service
        account: the events someone is expected to consume (the others wait for retention)."""
        rows = await self._db.read_all(
            "SELECT tenant_id, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE published_at IS NULL"
            " AND tenant_id IN (SELECT DISTINCT tenant_id FROM service_accounts) GROUP BY tenant_id"
        )
        return {r["tenant_id"]: (r["n"], r["oldest"]) for r in rows}

    async def pending(self, tenant_id: str, limit: int = 100) -> list[OutboxEvent]:
        """The tenant's oldest undelivered events, in id order (a seek on outbox_pending)."""
        rows = await self._db.read_all(
            "SELECT id, tenant_id, subject, payload FROM outbox"
            " WHERE tenant_id = ? AND published_at IS NULL ORDER BY id LIMIT ?",
            (tenant_id, limit),
        )
        return [_event(r) for r in rows]

    async def mark_published(self, ids: list[int]) -> None:
        if ids:
            marks = ",".join("?" * len(ids))
            await self._db.write(
                f"UPDATE outbox SET published_at = ? WHERE id IN ({marks}) RETURNING id",  # noqa: S608
                (now_ms(), *ids),
            )

    async def of_tenant(self, tenant_id: str) -> list[OutboxEvent]:
        rows = await self._db.read_all(
            "SELECT id, tenant_id, subject, payload FROM outbox WHERE tenant_id = ? ORDER BY id", (tenant_id,)
        )
        return [_event(r) for r in rows]

    async def recent(
        self, tenant_id: str, subject: str, since_ms: int, *, auto_provisioned: bool = False, limit: int = 20
    ) -> tuple[list[tuple[int, OutboxEvent]], int]:
        """The tenant's newest events with this subject since `since_ms` as (created at ms, event), and
        how many there were; reads only the outbox rows of that window (see registry/recent.py)."""
        first = await first_id_since(self._db, "outbox", since_ms)
        where = (
            "FROM outbox WHERE id >= ? AND created_at >= ? AND tenant_id = ? AND subject = ?"
            " AND (? = 0 OR json_extract(payload, '$.autoProvisioned') = 1)"
        )
        args = (first, since_ms, tenant_id, subject, int(auto_provisioned))
        rows = await self._db.read_all(
            f"SELECT id, tenant_id, subject, payload, created_at {where} ORDER BY id DESC LIMIT ?", (*args, limit)
        )
        total = await self._db.read_one(f"SELECT count(*) AS n {where}", args)
        return [(int(r["created_at"]), _event(r)) for r in rows], int(total["n"]) if total else 0

    async def prune(self, max_age_ms: int) -> int:
        """Published events past retention go; so do unconsumed ones, or a tenant without
        consumers would grow the outbox for ever."""
        gone = await self._db.write("DELETE FROM outbox WHERE created_at < ? RETURNING id", (now_ms() - max_age_ms,))
        return len(gone)


def _event(row: aiosqlite.Row) -> OutboxEvent:
    return OutboxEvent(row["id"], row["tenant_id"], row["subject"], json.loads(row["payload"]))
