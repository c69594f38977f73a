"""The event outbox: rows written with the change they describe, published later, at least once,
within per-tenant bounds (event_bounds.py) that the compactor here keeps between writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from . import event_bounds
from .database import Database
from .event_bounds import BACKLOG_SETTING, EVENT_SETTING
from .models import now_ms
from .recent import first_id_since

_PRUNE_CHUNK = 5000
"""Rows one pruning statement deletes at most: the writer is held for milliseconds, not seconds."""


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    tenant_id: str
    subject: str
    payload: dict[str, Any]
    coalesced: int = 0
    """Earlier events of its kind and device it stands for (folded into it over half the bound)."""
    revision: int = 0

    @property
    def body(self) -> bytes:
        sent = {**self.payload, "coalesced": self.coalesced} if self.coalesced else self.payload
        return json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class OutboxUsage:
    """What one tenant's outbox holds (bytes: payloads plus ROW_OVERHEAD each)."""

    events: int
    bytes: int
    pending: int
    pending_bytes: int
    coalesced_total: int
    dropped_total: int


class OutboxStore:
    def __init__(self, db: Database, *, max_event_bytes: int | None = None, backlog_max_bytes: int | None = None):
        self._db = db
        self._limits = {EVENT_SETTING: max_event_bytes, BACKLOG_SETTING: backlog_max_bytes}
        self._settled: set[str] = set()
        """Tenants over half their bound whose keys were all folded: while they stay over it, a new
        event folds its own key as it is written, so no pile can form and no scan is needed."""

    async def configure(self) -> None:
        """The bounds go to the registry, where the writers and the triggers read them."""
        for key, value in self._limits.items():
            if value is not None:
                await self._db.write(
                    "INSERT OR REPLACE INTO registry_settings (key, value) VALUES (?, ?)", (key, value)
                )

    async def usage(self) -> dict[str, OutboxUsage]:
        rows = await self._db.read_all("SELECT * FROM outbox_usage ORDER BY tenant_id")
        return {
            r["tenant_id"]: OutboxUsage(
                r["events"], r["bytes"], r["pending"], r["pending_bytes"], r["coalesced_total"], r["dropped_total"]
            )
            for r in rows
        }

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
            f"SELECT {_COLUMNS} FROM outbox WHERE tenant_id = ? AND published_at IS NULL ORDER BY id LIMIT ?",  # noqa: S608
            (tenant_id, limit),
        )
        return [_event(r) for r in rows]

    async def mark_published(self, events: list[OutboxEvent]) -> None:
        """Only as they were sent: one changed since (folded into, see event_bounds) stays undelivered
        and goes out again; one deleted since (folded, dropped) is simply gone."""
        if events:
            sent = json.dumps([[e.id, e.revision] for e in events])
            await self._db.write(
                "UPDATE outbox SET published_at = ?1 WHERE (id, revision) IN"
                " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?2)) RETURNING id",
                (now_ms(), sent),
            )

    async def of_tenant(self, tenant_id: str) -> list[OutboxEvent]:
        rows = await self._db.read_all(
            f"SELECT {_COLUMNS} FROM outbox WHERE tenant_id = ? ORDER BY id",  # noqa: S608
            (tenant_id,),
        )
        return [_event(r) for r in rows]

    async def prune(self, max_age_ms: int) -> int:
        """Events past retention go, delivered or not: a tenant without consumers keeps them this
        long (within its bound). Rows are appended in time order: an id range, a chunk at a time."""
        below = await first_id_since(self._db, "outbox", now_ms() - max_age_ms)
        gone = 0
        while True:
            rows = await self._db.write(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id < ? ORDER BY id LIMIT ?) RETURNING id",
                (below, _PRUNE_CHUNK),
            )
            gone += len(rows)
            if len(rows) < _PRUNE_CHUNK:
                return gone

    async def prune_delivered(self, max_age_ms: int) -> int:
        """Delivered events go soon: once delivered they are read by nobody."""
        before, gone = now_ms() - max_age_ms, 0
        tenants = await self._db.read_all("SELECT tenant_id FROM outbox_usage WHERE events > pending")
        for row in tenants:
            while True:
                rows = await self._db.write(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE tenant_id = ?"
                    " AND published_at IS NOT NULL AND published_at < ? LIMIT ?) RETURNING id",
                    (row["tenant_id"], before, _PRUNE_CHUNK),
                )
                gone += len(rows)
                if len(rows) < _PRUNE_CHUNK:
                    break
        return gone

    async def compact(self, node: str, *, steps: int = 20) -> int:
        """The compactor's round: each tenant over half its bound has the keys that piled up folded
        (up to `steps` transactions each), then is brought within its bound. Returns events folded."""
        over = await self._db.read_all(
            "SELECT tenant_id FROM outbox_usage WHERE bytes > coalesce((SELECT value FROM registry_settings"
            " WHERE key = ?), ?) / 2",
            (BACKLOG_SETTING, event_bounds.DEFAULT_BACKLOG_BYTES),
        )
        self._settled &= {row["tenant_id"] for row in over}
        folded = 0
        for row in over:
            tenant_id = row["tenant_id"]
            if tenant_id not in self._settled:
                folded += await self._fold_piles(tenant_id, steps)
            async with self._db.transaction() as tx:
                await event_bounds.make_room(tx, tenant_id, node)
        return folded

    async def _fold_piles(self, tenant_id: str, steps: int) -> int:
        """Folds the tenant's keys with three events or more, up to `steps` transactions."""
        folded, left = 0, steps
        keys = await event_bounds.keys_to_coalesce(self._db.reader, tenant_id)
        for key in keys:
            while left > 0:
                left -= 1
                async with self._db.transaction() as tx:
                    done = await event_bounds.coalesce(tx, tenant_id, key)
                folded += done
                if not done:
                    break
            if left <= 0:
                return folded
        self._settled.add(tenant_id)
        return folded


_COLUMNS = "id, tenant_id, subject, payload, coalesced, revision"


def _event(row: aiosqlite.Row) -> OutboxEvent:
    return OutboxEvent(
        row["id"], row["tenant_id"], row["subject"], json.loads(row["payload"]), row["coalesced"], row["revision"]
    )
