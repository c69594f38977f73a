"""Writing events to the outbox inside the caller's transaction (delivered later, at least once)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiosqlite

from .models import now_ms


async def emit(tx: aiosqlite.Connection, tenant_id: str, subject: str, node: str, **fields: Any) -> None:
    """Every event carries correlationId, timestamp (ms) and originatorReplicaId (the node)."""
    now = now_ms()
    payload = {"correlationId": uuid.uuid4().hex, "timestamp": now, "originatorReplicaId": node, **fields}
    await tx.execute(
        "INSERT INTO outbox (tenant_id, subject, payload, created_at) VALUES (?, ?, ?, ?)",
        (tenant_id, subject, json.dumps(payload, separators=(",", ":")), now),
    )


async def emit_many(
    tx: aiosqlite.Connection, tenant_id: str, node: str, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """`emit` for many events in one statement (bulk imports): (subject, fields) each."""
    now = now_ms()
    await tx.executemany(
        "INSERT INTO outbox (tenant_id, subject, payload, created_at) VALUES (?, ?, ?, ?)",
        [
            (
                tenant_id,
                subject,
                json.dumps(
                    {"correlationId": uuid.uuid4().hex, "timestamp": now, "originatorReplicaId": node, **fields},
                    separators=(",", ":"),
                ),
                now,
            )
            for subject, fields in events
        ],
    )
