"""Endpoint filters (Kaa EPR, 18/EFE): saved queries per tenant, their members kept in a table.

A new (or replaced) filter is `pending` while a scan evaluates it over the tenant's devices, a chunk
per transaction; then it is `active` (`filter/activated`). From then on only devices that changed
are evaluated: triggers (migration 0009) note them in endpoint_filter_dirty in the statement that
changed them, and `evaluate_changed` re-evaluates a batch of noted devices against their tenant's
filters in one query per tenant, writing the membership changes and their `endpoint/matched` /
`endpoint/unmatched` events in the same transaction. Changes while pending change members silently:
`filter/activated` tells a consumer the list is complete, read it then.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import aiosqlite

from .database import Database
from .devices import require_tenant
from .errors import Conflict, Invalid, NotFound
from .events import emit, emit_many
from .filter_query import CompiledQuery, compile_query
from .identifiers import is_valid_id
from .models import EndpointFilter, EndpointFilterState, FilterMember, from_ms, from_ms_or_none, now_ms

MAX_FILTERS_PER_TENANT = 100
SCAN_CHUNK = 1000
"""Devices the first scan evaluates per transaction at most (fewer for costly queries)."""
EVALUATION_BUDGET = 2_000
"""Device x comparison evaluations per transaction (a filter's `cost`; each `$in` value counts), about
10 ms here (a metadata comparison costs ~4 us per device): a CONNECT waiting for the writer waits
that long at most. 100 devices of a tenant with 10 two-comparison filters per transaction; 1 with
100 filters of 64 comparisons."""

_NOTED_MATCHING = "SELECT d.id FROM devices d WHERE d.tenant_id = ? AND d.id IN (SELECT value FROM json_each(?)) AND "
"""...followed by a compiled query (registry/filter_query.py): fixed SQL whose values are all bound."""
_SELECT = (
    "SELECT f.*, (SELECT COUNT(*) FROM endpoint_filter_members m WHERE m.tenant_id = f.tenant_id"
    " AND m.filter_id = f.id) AS matching FROM endpoint_filters f"
)


@dataclass(frozen=True, slots=True)
class _Filter:
    id: str
    active: bool
    query: CompiledQuery


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> CompiledQuery:
    """A stored query, compiled once: evaluation rounds see the same few texts over and over."""
    return compile_query(json.loads(text))


def _filter(row: aiosqlite.Row) -> EndpointFilter:
    return EndpointFilter(
        tenant_id=row["tenant_id"],
        id=row["id"],
        query=json.loads(row["query"]),
        state=EndpointFilterState(row["state"]),
        matching=row["matching"],
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
        activated_at=from_ms_or_none(row["activated_at"]),
    )


class EndpointFilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, tenant_id: str, filter_id: str, query: object) -> EndpointFilter:
        """Saved `pending`; the evaluator scans the tenant's devices and then activates it."""
        if not is_valid_id(filter_id):
            raise Invalid(f"invalid filter id {filter_id!r}", field="id")
        compiled = compile_query(query)
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            async with tx.execute("SELECT COUNT(*) FROM endpoint_filters WHERE tenant_id = ?", (tenant_id,)) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] >= MAX_FILTERS_PER_TENANT:
                limit = MAX_FILTERS_PER_TENANT
                raise Conflict(f"tenant {tenant_id!r} has {limit} filters, the most allowed", field="id")
            async with tx.execute(
                "INSERT INTO endpoint_filters (tenant_id, id, query, state, scan_after, created_at, updated_at)"
                " VALUES (?, ?, ?, 'pending', '', ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (tenant_id, filter_id, compiled.text, now, now),
            ) as cur:
                if await cur.fetchone() is None:
                    raise Conflict(f"filter {filter_id!r} already exists in tenant {tenant_id!r}", field="id")
        return await self.get(tenant_id, filter_id)

    async def replace(self, tenant_id: str, filter_id: str, query: object, *, node: str) -> EndpointFilter:
        """A new query: the filter is pending again (`filter/deactivated`, reason `updated`) until its
        scan is done; its members stay meanwhile and are corrected by the scan."""
        compiled = compile_query(query)
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT state FROM endpoint_filters WHERE tenant_id = ? AND id = ?", (tenant_id, filter_id)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                await require_tenant(tx, tenant_id)
                raise NotFound(f"filter {filter_id!r} not found in tenant {tenant_id!r}", field="filter")
            await tx.execute(
                "UPDATE endpoint_filters SET query = ?, state = 'pending', scan_after = '', activated_at = NULL,"
                " updated_at = ? WHERE tenant_id = ? AND id = ?",
                (compiled.text, now_ms(), tenant_id, filter_id),
            )
            if row["state"] == EndpointFilterState.ACTIVE:
                await emit(tx, tenant_id, "filter/deactivated", node, filterId=filter_id, reason="updated")
        return await self.get(tenant_id, filter_id)

    async def get(self, tenant_id: str, filter_id: str) -> EndpointFilter:
        row = await self._db.read_one(f"{_SELECT} WHERE f.tenant_id = ? AND f.id = ?", (tenant_id, filter_id))
        if row is None:
            await require_tenant(self._db.reader, tenant_id)
            raise NotFound(f"filter {filter_id!r} not found in tenant {tenant_id!r}", field="filter")
        return _filter(row)

    async def of_tenant(self, tenant_id: str) -> list[EndpointFilter]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all(f"{_SELECT} WHERE f.tenant_id = ? ORDER BY f.id", (tenant_id,))
        return [_filter(r) for r in rows]

    async def delete(self, tenant_id: str, filter_id: str, *, node: str) -> None:
        """Its members go with it: one `filter/deactivated` (reason `deleted`), no per-device events."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "DELETE FROM endpoint_filters WHERE tenant_id = ? AND id = ? RETURNING state", (tenant_id, filter_id)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                await require_tenant(tx, tenant_id)
                raise NotFound(f"filter {filter_id!r} not found in tenant {tenant_id!r}", field="filter")
            if row["state"] == EndpointFilterState.ACTIVE:  # a pending one was never announced
                await emit(tx, tenant_id, "filter/deactivated", node, filterId=filter_id, reason="deleted")

    async def members(
        self, tenant_id: str, filter_id: str, *, after: str = "", limit: int = 100
    ) -> tuple[EndpointFilter, list[FilterMember]]:
        """A page of the filter's devices by id, after `after`."""
        found = await self.get(tenant_id, filter_id)
        rows = await self._db.read_all(
            "SELECT m.device_id, m.matched_at, d.app_version FROM endpoint_filter_members m"
            " LEFT JOIN devices d ON d.tenant_id = m.tenant_id AND d.id = m.device_id"
            " WHERE m.tenant_id = ? AND m.filter_id = ? AND m.device_id > ? ORDER BY m.device_id LIMIT ?",
            (tenant_id, filter_id, after, limit),
        )
        return found, [
            FilterMember(endpoint_id=r["device_id"], app_version=r["app_version"], matched_at=from_ms(r["matched_at"]))
            for r in rows
        ]

    async def scan_pending(self, *, node: str, chunk: int = SCAN_CHUNK) -> bool:
        """One chunk of the oldest pending filter's first scan; True when there was one."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT tenant_id, id, query, scan_after FROM endpoint_filters WHERE state = 'pending'"
                " ORDER BY scanned_at, created_at LIMIT 1"
            ) as cur:
                pending = await cur.fetchone()
            if pending is None:
                return False
            tenant_id, filter_id, after = pending["tenant_id"], pending["id"], pending["scan_after"] or ""
            query = _compiled(pending["query"])
            chunk = max(1, min(chunk, EVALUATION_BUDGET // query.cost))
            async with tx.execute(
                f"SELECT d.id, ({query.sql}) FROM devices d WHERE d.tenant_id = ? AND d.id > ?"  # noqa: S608
                " ORDER BY d.id LIMIT ?",
                (*query.args, tenant_id, after, chunk),
            ) as cur:
                rows = list(await cur.fetchall())
            done = len(rows) < chunk
            upper = "\U0010ffff" if done else rows[-1][0]
            await tx.execute(
                "DELETE FROM endpoint_filter_members WHERE tenant_id = ? AND filter_id = ?"
                " AND device_id > ? AND device_id <= ?",
                (tenant_id, filter_id, after, upper),
            )
            now = now_ms()
            await tx.executemany(
                "INSERT INTO endpoint_filter_members (tenant_id, filter_id, device_id, matched_at) VALUES (?, ?, ?, ?)",
                [(tenant_id, filter_id, r[0], now) for r in rows if r[1]],
            )
            if not done:  # its turn ends: the pending filter scanned longest ago goes next
                await tx.execute(
                    "UPDATE endpoint_filters SET scan_after = ?, scanned_at = ? WHERE tenant_id = ? AND id = ?",
                    (upper, now, tenant_id, filter_id),
                )
                return True
            await tx.execute(
                "UPDATE endpoint_filters SET state = 'active', scan_after = NULL, activated_at = ?"
                " WHERE tenant_id = ? AND id = ?",
                (now, tenant_id, filter_id),
            )
            async with tx.execute(
                "SELECT COUNT(*) FROM endpoint_filter_members WHERE tenant_id = ? AND filter_id = ?",
                (tenant_id, filter_id),
            ) as cur:
                count = await cur.fetchone()
            await emit(tx, tenant_id, "filter/activated", node, filterId=filter_id, matching=count[0] if count else 0)
            return True

    async def evaluate_changed(self, *, node: str, limit: int = 500) -> int:
        """Re-evaluates noted devices of the tenant with the oldest note, oldest first: at most `limit`,
        and fewer when its filters are costly (EVALUATION_BUDGET), so one transaction holds the writer
        for milliseconds. Returns how many."""
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT tenant_id FROM endpoint_filter_dirty ORDER BY seq LIMIT 1") as cur:
                oldest = await cur.fetchone()
            if oldest is None:
                return 0
            tenant_id = oldest[0]
            filters = await _filters_of(tx, tenant_id)
            cost = sum(f.query.cost for f in filters)
            take = max(1, min(limit, EVALUATION_BUDGET // max(1, cost)))
            async with tx.execute(
                "SELECT seq, device_id FROM endpoint_filter_dirty WHERE tenant_id = ? ORDER BY seq LIMIT ?",
                (tenant_id, take),
            ) as cur:
                rows = list(await cur.fetchall())
            if filters:  # none: deleted since, and their members with them
                await _reevaluate(tx, tenant_id, [r["device_id"] for r in rows], filters, node)
            await tx.execute(
                "DELETE FROM endpoint_filter_dirty WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps([r["seq"] for r in rows]),),
            )
            return len(rows)


async def _filters_of(tx: aiosqlite.Connection, tenant_id: str) -> list[_Filter]:
    async with tx.execute(
        "SELECT id, state, query FROM endpoint_filters WHERE tenant_id = ? ORDER BY id", (tenant_id,)
    ) as cur:
        return [
            _Filter(r["id"], r["state"] == EndpointFilterState.ACTIVE, _compiled(r["query"]))
            for r in await cur.fetchall()
        ]


async def _reevaluate(
    tx: aiosqlite.Connection, tenant_id: str, devices: list[str], filters: list[_Filter], node: str
) -> None:
    """Writes the membership changes of `devices` and their events (for active filters)."""
    ids = json.dumps(devices)
    async with tx.execute(
        "SELECT filter_id, device_id FROM endpoint_filter_members"
        " WHERE tenant_id = ? AND device_id IN (SELECT value FROM json_each(?))",
        (tenant_id, ids),
    ) as cur:
        before = {(r[0], r[1]) for r in await cur.fetchall()}
    now_in: set[tuple[str, str]] = set()
    for f in filters:  # a statement per filter (one trip to the writer thread): each prepared once, cached
        rows = await tx.execute_fetchall(_NOTED_MATCHING + f.query.sql, (tenant_id, ids, *f.query.args))
        now_in.update((f.id, row[0]) for row in rows)
    added, removed = sorted(now_in - before), sorted(before - now_in)
    if not added and not removed:
        return
    async with tx.execute(  # a deleted device: the version its tombstone kept
        "SELECT id, app_version FROM devices WHERE tenant_id = ?1 AND id IN (SELECT value FROM json_each(?2))"
        " UNION ALL SELECT device_id, app_version FROM device_tombstones WHERE tenant_id = ?1"
        " AND device_id IN (SELECT value FROM json_each(?2))"
        " AND device_id NOT IN (SELECT id FROM devices WHERE tenant_id = ?1)",
        (tenant_id, json.dumps(sorted({d for _, d in added + removed}))),
    ) as cur:
        app_versions: dict[str, str | None] = {r[0]: r[1] for r in await cur.fetchall()}
    now = now_ms()
    await tx.executemany(
        "INSERT INTO endpoint_filter_members (tenant_id, filter_id, device_id, matched_at) VALUES (?, ?, ?, ?)",
        [(tenant_id, f, d, now) for f, d in added],
    )
    await tx.executemany(
        "DELETE FROM endpoint_filter_members WHERE tenant_id = ? AND filter_id = ? AND device_id = ?",
        [(tenant_id, f, d) for f, d in removed],
    )
    active = {f.id for f in filters if f.active}
    await emit_many(
        tx,
        tenant_id,
        node,
        [
            (subject, {"filterId": f, "endpointId": d, "appVersionName": app_versions.get(d)})
            for subject, changes in (("endpoint/matched", added), ("endpoint/unmatched", removed))
            for f, d in changes
            if f in active
        ],
    )
