"""The per-tenant bound on the outbox, inside the transactions that write events (docs/epmp.md#bounds).

A tenant's outbox holds at most `event_backlog_max_bytes` (registry_settings; an event counts its
payload plus ROW_OVERHEAD). Over half of it, events of one key (kind and device, see event_shape)
are folded: a new one takes its key's previous newest one in, when an older one is still there
(which stays), so a flooding device keeps two events of each kind, the first and the newest;
the compactor (`coalesce`) folds what piled up before. At the bound, the tenant's delivered events
go, then its oldest undelivered ones, counted in one `events/dropped` event. Another tenant's
events are never touched: every statement here is within one tenant.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from .event_shape import DROPPED, METADATA_UPDATED, encoded, fold, shrink
from .models import now_ms

BACKLOG_SETTING = "event_backlog_max_bytes"
EVENT_SETTING = "event_max_bytes"
DEFAULT_BACKLOG_BYTES = 67_108_864  # the migration's trigger has the same default
DEFAULT_EVENT_BYTES = 131_072
ROW_OVERHEAD = 128
"""Bytes an event costs beyond its payload (row, subject, key, index entries), as the triggers count."""
_MARKER_ROOM = 1024
"""Room left for the `events/dropped` event itself when dropping."""
FOLD_BYTES = 1_048_576
"""Payload bytes one compaction transaction reads at most (it holds the writer meanwhile)."""


@dataclass(frozen=True)
class Budget:
    max_event: int
    backlog: int
    used: int

    @property
    def coalescing(self) -> bool:
        return self.used > self.backlog // 2


async def budget(tx: aiosqlite.Connection, tenant_id: str) -> Budget:
    async with tx.execute(
        "SELECT coalesce((SELECT value FROM registry_settings WHERE key = ?), ?),"
        " coalesce((SELECT value FROM registry_settings WHERE key = ?), ?),"
        " coalesce((SELECT bytes FROM outbox_usage WHERE tenant_id = ?), 0)",
        (EVENT_SETTING, DEFAULT_EVENT_BYTES, BACKLOG_SETTING, DEFAULT_BACKLOG_BYTES, tenant_id),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return Budget(int(row[0]), int(row[1]), int(row[2]))


async def fold_previous(
    tx: aiosqlite.Connection, tenant_id: str, subject: str, key: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """For a new event about to be written while its tenant is coalescing: when its key has two
    undelivered events or more, the newest of them is folded into it (and deleted). Returns the
    payload to write and how many earlier events it stands for."""
    async with tx.execute(
        "SELECT id, payload, coalesced FROM outbox WHERE tenant_id = ? AND coalesce_key = ? AND published_at IS NULL"
        " ORDER BY id DESC LIMIT 2",
        (tenant_id, key),
    ) as cur:
        rows = list(await cur.fetchall())
    if len(rows) < 2:
        return payload, 0
    previous = rows[0]
    await tx.execute("DELETE FROM outbox WHERE id = ?", (previous["id"],))
    await _count(tx, tenant_id, coalesced=1)
    return fold(subject, json.loads(previous["payload"]), payload), int(previous["coalesced"]) + 1


async def keys_to_coalesce(db: aiosqlite.Connection, tenant_id: str, limit: int = 100) -> list[str]:
    """The tenant's keys with three undelivered events or more, the one waiting longest first (read on
    the reader: it scans the tenant's undelivered events, which no write should wait for)."""
    async with db.execute(
        "SELECT coalesce_key FROM outbox WHERE tenant_id = ? AND published_at IS NULL AND coalesce_key != ''"
        " GROUP BY coalesce_key HAVING count(*) > 2 ORDER BY min(id) LIMIT ?",
        (tenant_id, limit),
    ) as cur:
        return [r[0] for r in await cur.fetchall()]


async def coalesce(tx: aiosqlite.Connection, tenant_id: str, key: str) -> int:
    """One step of the compactor: the key's middle events (between its first and its newest) are
    folded into its newest, at most 1,000 or FOLD_BYTES of them. Returns how many (0: none left)."""
    where = "FROM outbox WHERE tenant_id = ? AND coalesce_key = ? AND published_at IS NULL"
    async with tx.execute(f"SELECT min(id), max(id) {where}", (tenant_id, key)) as cur:
        bounds = await cur.fetchone()
    assert bounds is not None
    first_id, last_id = bounds
    columns = "id, subject, payload, coalesced, length(CAST(payload AS BLOB)) AS size"
    async with tx.execute(
        f"SELECT {columns} {where} AND id > ? AND id < ? ORDER BY id LIMIT 1000",
        (tenant_id, key, first_id, last_id),
    ) as cur:
        middles: list[aiosqlite.Row] = []
        read = 0
        for row in await cur.fetchall():
            if middles and read + int(row["size"]) > FOLD_BYTES:
                break
            middles.append(row)
            read += int(row["size"])
    async with tx.execute(f"SELECT {columns} FROM outbox WHERE id = ?", (last_id,)) as cur:  # noqa: S608
        last = await cur.fetchone()
    if not middles or last is None:
        return 0
    subject = last["subject"]
    stands_for = int(last["coalesced"]) + sum(1 + int(m["coalesced"]) for m in middles)
    await tx.execute(
        "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))", (json.dumps([m["id"] for m in middles]),)
    )
    if subject == METADATA_UPDATED:  # the net change; new content, so a consumer must not take it for the old
        folded = json.loads(middles[0]["payload"])
        for row in middles[1:]:
            folded = fold(subject, folded, json.loads(row["payload"]))
        folded = fold(subject, folded, json.loads(last["payload"])) | {"correlationId": uuid.uuid4().hex}
        folded = shrink(subject, folded, (await budget(tx, tenant_id)).max_event)
        await tx.execute(
            "UPDATE outbox SET payload = ?, coalesced = ?, revision = revision + 1 WHERE id = ?",
            (encoded(folded), stands_for, last_id),
        )
    else:  # the newest as it was, standing for more: a re-delivery would change nothing else
        await tx.execute("UPDATE outbox SET coalesced = ? WHERE id = ?", (stands_for, last_id))
    await _count(tx, tenant_id, coalesced=len(middles))
    return len(middles)


async def make_room(tx: aiosqlite.Connection, tenant_id: str, node: str) -> int:
    """Back within the tenant's bound: its delivered events go first, then its oldest undelivered ones
    (never its newest), counted in its `events/dropped` event. Returns how many were dropped."""
    limits = await budget(tx, tenant_id)
    if limits.used <= limits.backlog:
        return 0
    await tx.execute("DELETE FROM outbox WHERE tenant_id = ? AND published_at IS NOT NULL", (tenant_id,))
    limits = await budget(tx, tenant_id)
    excess = limits.used - limits.backlog
    if excess <= 0:
        return 0
    excess += _MARKER_ROOM
    gone = Dropped()
    freed, after = 0, 0
    while freed < excess:  # a page at a time, deleted as it goes: a huge import keeps little in memory
        async with tx.execute(
            "SELECT id, subject, created_at, coalesced, length(CAST(payload AS BLOB)) + ?1 AS size FROM outbox"
            " WHERE tenant_id = ?2 AND published_at IS NULL AND id > ?3 AND subject != ?4 AND id <"
            " (SELECT max(id) FROM outbox WHERE tenant_id = ?2 AND published_at IS NULL) ORDER BY id LIMIT 256",
            (ROW_OVERHEAD, tenant_id, after, DROPPED),
        ) as cur:
            rows = list(await cur.fetchall())
        if not rows:
            break
        page = []
        for row in rows:
            page.append(row["id"])
            gone.add(row["subject"], 1 + int(row["coalesced"]), int(row["created_at"]))
            freed += int(row["size"])
            if freed >= excess:
                break
        await tx.execute("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(page),))
        after = int(rows[-1]["id"])
    if not gone.events:
        return 0
    await _count(tx, tenant_id, dropped=gone.events)
    await _mark_dropped(tx, tenant_id, node, gone)
    return gone.events


@dataclass
class Dropped:
    """What one `make_room` dropped: events (coalesced ones included), by subject, their time span."""

    events: int = 0
    subjects: Counter[str] = field(default_factory=Counter)
    first: int | None = None
    last: int | None = None

    def add(self, subject: str, events: int, created_at: int) -> None:
        self.events += events
        self.subjects[subject] += events
        self.first = created_at if self.first is None else min(self.first, created_at)
        self.last = created_at if self.last is None else max(self.last, created_at)


async def _mark_dropped(tx: aiosqlite.Connection, tenant_id: str, node: str, gone: Dropped) -> None:
    """The tenant's undelivered `events/dropped` event, grown by what `gone` (a new one if it has none)."""
    key = encoded([DROPPED])
    async with tx.execute(
        "SELECT id, payload FROM outbox WHERE tenant_id = ? AND coalesce_key = ? AND published_at IS NULL"
        " ORDER BY id DESC LIMIT 1",
        (tenant_id, key),
    ) as cur:
        found = await cur.fetchone()
    now = now_ms()
    marker: dict[str, Any] = json.loads(found["payload"]) if found else {"dropped": 0, "subjects": {}}
    subjects = Counter[str](marker["subjects"]) + gone.subjects
    marker |= {
        "correlationId": uuid.uuid4().hex,  # new content: a consumer must not take it for the old
        "timestamp": now,
        "originatorReplicaId": node,
        "dropped": marker["dropped"] + gone.events,
        "subjects": dict(sorted(subjects.items())),
        "firstTimestamp": min(marker.get("firstTimestamp", now), gone.first or now),
        "lastTimestamp": max(marker.get("lastTimestamp", 0), gone.last or 0),
    }
    if found:
        await tx.execute(
            "UPDATE outbox SET payload = ?, revision = revision + 1 WHERE id = ?", (encoded(marker), found["id"])
        )
    else:
        await tx.execute(
            "INSERT INTO outbox (tenant_id, subject, payload, created_at, coalesce_key) VALUES (?, ?, ?, ?, ?)",
            (tenant_id, DROPPED, encoded(marker), now, key),
        )


async def _count(tx: aiosqlite.Connection, tenant_id: str, *, coalesced: int = 0, dropped: int = 0) -> None:
    await tx.execute(
        "UPDATE outbox_usage SET coalesced_total = coalesced_total + ?, dropped_total = dropped_total + ?"
        " WHERE tenant_id = ?",
        (coalesced, dropped, tenant_id),
    )
