"""The event outbox: rows written with the change they describe, published later, at least once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .database import Database
from .models import now_ms


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

    async def pending(self, limit: int = 500) -> list[OutboxEvent]:
        rows = await self._db.read_all(
            "SELECT id, tenant_id, subject, payload FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [OutboxEvent(r["id"], r["tenant_id"], r["subject"], json.loads(r["payload"])) for r in rows]

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
        return [OutboxEvent(r["id"], r["tenant_id"], r["subject"], json.loads(r["payload"])) for r in rows]

    async def prune(self, max_age_ms: int) -> int:
        """Published events past retention go; so do unconsumed ones, or a tenant without
        consumers would grow the outbox for ever."""
        gone = await self._db.write("DELETE FROM outbox WHERE created_at < ? RETURNING id", (now_ms() - max_age_ms,))
        return len(gone)
