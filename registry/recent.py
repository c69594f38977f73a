"""The rows of the last hour of an append-only table, without an index on its time column: rows are
appended in time order, so a binary search on the rowid finds the first one, and the window is then a
rowid range (its own rows only, however long the table).

Rows written out of time order (clocks of several nodes) may fall on the wrong side of the boundary:
the window is approximate by as much, which is all a dashboard needs."""

from __future__ import annotations

from typing import Literal

from .database import Database

_TABLES = {"connection_log": "at", "outbox": "created_at", "device_history": "at"}
Table = Literal["connection_log", "outbox", "device_history"]


async def first_id_since(db: Database, table: Table, since_ms: int) -> int:
    """The smallest id whose row is at or after `since_ms` (one past the last id when none is)."""
    column = _TABLES[table]  # a fixed name, never input
    # two subqueries: min() and max() together in one SELECT would scan the table
    bounds = await db.read_one(f"SELECT (SELECT min(id) FROM {table}) AS lo, (SELECT max(id) FROM {table}) AS hi")  # noqa: S608
    if bounds is None or bounds["hi"] is None:
        return 0
    lo, hi = int(bounds["lo"]), int(bounds["hi"]) + 1
    while lo < hi:  # the answer is in [lo, hi]
        mid = (lo + hi) // 2
        row = await db.read_one(
            f"SELECT id, {column} AS t FROM {table} WHERE id >= ? ORDER BY id LIMIT 1",  # noqa: S608
            (mid,),
        )
        if row is None:  # rows below mid were deleted meanwhile: nothing from mid on
            hi = mid
        elif int(row["t"]) >= since_ms:
            hi = mid  # ids in [mid, row.id) do not exist
        else:
            lo = int(row["id"]) + 1
    return lo


async def auto_provisioned_since(
    db: Database, tenant_id: str, since_ms: int, *, limit: int = 20
) -> tuple[list[tuple[int, str]], int]:
    """The tenant's devices auto-provisioned since `since_ms`, newest first, as (created at ms, device
    id), and how many there were: from their histories' `created` rows (events are pruned soon after
    delivery; a device deleted since is not listed)."""
    first = await first_id_since(db, "device_history", since_ms)
    where = (
        "FROM device_history WHERE id >= ? AND at >= ? AND tenant_id = ? AND event = 'created'"
        " AND json_extract(detail, '$.autoProvisioned') = 1"
    )
    args = (first, since_ms, tenant_id)
    rows = await db.read_all(f"SELECT at, device_id {where} ORDER BY id DESC LIMIT ?", (*args, limit))
    total = await db.read_one(f"SELECT count(*) AS n {where}", args)
    return [(int(r["at"]), str(r["device_id"])) for r in rows], int(total["n"]) if total else 0
