"""Writing events to the outbox inside the caller's transaction (delivered later, at least once),
within the tenant's bounds (registry/event_bounds.py): one event's size, the tenant's bytes."""

from __future__ import annotations

import uuid
from typing import Any

import aiosqlite

from .event_bounds import budget, fold_previous, make_room
from .event_shape import METADATA_UPDATED, coalesce_key, encoded, shrink
from .models import now_ms


async def emit(tx: aiosqlite.Connection, tenant_id: str, subject: str, node: str, **fields: Any) -> None:
    """Every event carries correlationId, timestamp (ms) and originatorReplicaId (the node)."""
    await emit_many(tx, tenant_id, node, [(subject, fields)])


async def emit_many(
    tx: aiosqlite.Connection, tenant_id: str, node: str, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """`emit` for many events in one statement (bulk imports): (subject, fields) each."""
    if not events:
        return
    now = now_ms()
    limits = await budget(tx, tenant_id)
    rows = []
    for subject, fields in events:
        payload = {"correlationId": uuid.uuid4().hex, "timestamp": now, "originatorReplicaId": node, **fields}
        key = coalesce_key(subject, fields)
        coalesced = 0
        if subject == METADATA_UPDATED and limits.coalescing:  # the others are folded by a trigger (0012)
            payload, coalesced = await fold_previous(tx, tenant_id, subject, key, payload)
        rows.append((tenant_id, subject, encoded(shrink(subject, payload, limits.max_event)), now, key, coalesced))
    await tx.executemany(
        "INSERT INTO outbox (tenant_id, subject, payload, created_at, coalesce_key, coalesced)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    await make_room(tx, tenant_id, node)
