"""Tenant rows."""

from __future__ import annotations

import builtins
import json
import sqlite3
from typing import Any

import aiosqlite

from .database import Database
from .errors import Conflict, Invalid, NotFound
from .identifiers import is_valid_id
from .models import Tenant, from_ms, now_ms

_UNSET: Any = object()


def _tenant(row: aiosqlite.Row) -> Tenant:
    return Tenant(
        id=row["id"],
        enabled=bool(row["enabled"]),
        max_devices=row["max_devices"],
        max_connections=row["max_connections"],
        max_retained_messages=row["max_retained_messages"],
        max_retained_bytes=row["max_retained_bytes"],
        forward_extensions=json.loads(row["forward_extensions"]),
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
    )


class TenantStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        tenant_id: str,
        *,
        max_devices: int | None = None,
        max_connections: int | None = None,
        max_retained_messages: int | None = None,
        max_retained_bytes: int | None = None,
        forward_extensions: list[str] | None = None,
    ) -> Tenant:
        if not is_valid_id(tenant_id):
            raise Invalid(f"invalid tenant id {tenant_id!r}", field="id")
        now = now_ms()
        try:
            async with self._db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO tenants (id, enabled, max_devices, max_connections, max_retained_messages,"
                    " max_retained_bytes, forward_extensions, created_at, updated_at)"
                    " VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        tenant_id,
                        max_devices,
                        max_connections,
                        max_retained_messages,
                        max_retained_bytes,
                        json.dumps(forward_extensions or []),
                        now,
                        now,
                    ),
                )
        except sqlite3.IntegrityError:
            raise Conflict(f"tenant {tenant_id!r} already exists", field="id") from None
        return await self.get(tenant_id)

    async def get(self, tenant_id: str) -> Tenant:
        async with self._db.reader.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} not found", field="tenant")
        return _tenant(row)

    async def list(self) -> list[Tenant]:
        async with self._db.reader.execute("SELECT * FROM tenants ORDER BY id") as cur:
            return [_tenant(r) for r in await cur.fetchall()]

    async def update(
        self,
        tenant_id: str,
        *,
        enabled: bool | None = None,
        max_devices: int | None = _UNSET,
        max_connections: int | None = _UNSET,
        max_retained_messages: int | None = _UNSET,
        max_retained_bytes: int | None = _UNSET,
        forward_extensions: builtins.list[str] | None = None,
    ) -> Tenant:
        sets: list[str] = ["updated_at = ?"]
        args: list[object] = [now_ms()]
        if enabled is not None:
            sets.append("enabled = ?")
            args.append(int(enabled))
        limits = {
            "max_devices": max_devices,
            "max_connections": max_connections,
            "max_retained_messages": max_retained_messages,
            "max_retained_bytes": max_retained_bytes,
        }
        for column, value in limits.items():  # column names from this literal, never from input
            if value is not _UNSET:
                sets.append(f"{column} = ?")
                args.append(value)
        if forward_extensions is not None:
            sets.append("forward_extensions = ?")
            args.append(json.dumps(forward_extensions))
        async with self._db.transaction() as tx:
            cur = await tx.execute(f"UPDATE tenants SET {', '.join(sets)} WHERE id = ?", (*args, tenant_id))  # noqa: S608
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found", field="tenant")
        return await self.get(tenant_id)

    async def delete(self, tenant_id: str) -> None:
        """Deletes the tenant with its devices, credentials, metadata and connection records."""
        async with self._db.transaction() as tx:
            cur = await tx.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))
            if cur.rowcount == 0:
                raise NotFound(f"tenant {tenant_id!r} not found", field="tenant")
