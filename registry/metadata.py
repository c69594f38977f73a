"""Endpoint metadata: key -> JSON value per device. Every change is one transaction that also writes
the `metadata updated` event, so two racing partial updates of one device never lose each other."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .database import Database
from .devices import require_device
from .events import emit


def canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class MetadataDiff:
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    updated: dict[str, dict[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.updated)


class MetadataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, tenant_id: str, device_id: str) -> dict[str, Any]:
        await require_device(self._db.reader, tenant_id, device_id)
        rows = await self._db.read_all(
            "SELECT key, value FROM metadata WHERE tenant_id = ? AND device_id = ? ORDER BY key", (tenant_id, device_id)
        )
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def change(
        self,
        tenant_id: str,
        device_id: str,
        mutate: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        node: str,
    ) -> MetadataDiff:
        """`mutate` gets the current metadata and returns the new one, or raises to change nothing."""
        async with self._db.transaction() as tx:
            device = await require_device(tx, tenant_id, device_id)
            async with tx.execute(
                "SELECT key, value FROM metadata WHERE tenant_id = ? AND device_id = ?", (tenant_id, device_id)
            ) as cur:
                before = {r["key"]: r["value"] for r in await cur.fetchall()}
            after = {k: canonical(v) for k, v in mutate({k: json.loads(v) for k, v in before.items()}).items()}
            diff = MetadataDiff(
                added={k: v for k, v in after.items() if k not in before},
                removed={k: v for k, v in before.items() if k not in after},
                updated={
                    k: {"oldValue": before[k], "newValue": v}
                    for k, v in after.items()
                    if k in before and before[k] != v
                },
            )
            if not diff:
                return diff
            if diff.removed:
                await tx.executemany(
                    "DELETE FROM metadata WHERE tenant_id = ? AND device_id = ? AND key = ?",
                    [(tenant_id, device_id, k) for k in diff.removed],
                )
            changed = {**diff.added, **{k: v["newValue"] for k, v in diff.updated.items()}}
            if changed:
                await tx.executemany(
                    "INSERT INTO metadata (tenant_id, device_id, key, value) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (tenant_id, device_id, key) DO UPDATE SET value = excluded.value",
                    [(tenant_id, device_id, k, v) for k, v in changed.items()],
                )
            await emit(
                tx,
                tenant_id,
                "endpoint/metadata/updated",
                node,
                endpointId=device_id,
                appVersionName=device["app_version"],
                added=diff.added,
                removed=diff.removed,
                updated=diff.updated,
            )
        return diff
