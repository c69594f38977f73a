"""Device rows."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import aiosqlite

from .database import Database
from .errors import Conflict, Invalid, NotFound
from .events import emit
from .identifiers import is_valid_id
from .models import Device, DeviceState, from_ms, now_ms

_UNSET: Any = object()


def _device(row: aiosqlite.Row) -> Device:
    return Device(
        tenant_id=row["tenant_id"],
        id=row["id"],
        group=row["grp"],
        app_version=row["app_version"],
        attributes=json.loads(row["attributes"]),
        state=DeviceState(row["state"]),
        enabled=bool(row["enabled"]),
        auto_provisioned=bool(row["auto_provisioned"]),
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
    )


async def require_tenant(conn: aiosqlite.Connection, tenant_id: str) -> aiosqlite.Row:
    async with conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found", field="tenant")
    return row


async def require_device(conn: aiosqlite.Connection, tenant_id: str, device_id: str) -> aiosqlite.Row:
    await require_tenant(conn, tenant_id)
    async with conn.execute("SELECT * FROM devices WHERE tenant_id = ? AND id = ?", (tenant_id, device_id)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"device {device_id!r} not found in tenant {tenant_id!r}", field="device")
    return row


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        tenant_id: str,
        device_id: str,
        *,
        group: str = "default",
        app_version: str | None = None,
        attributes: dict[str, str] | None = None,
        node: str = "",
    ) -> Device:
        if not is_valid_id(device_id):
            raise Invalid(f"invalid device id {device_id!r}", field="id")
        if not is_valid_id(group):
            raise Invalid(f"invalid group {group!r}", field="group")
        now = now_ms()
        async with self._db.transaction() as tx:
            tenant = await require_tenant(tx, tenant_id)
            if tenant["max_devices"] is not None:
                async with tx.execute("SELECT count(*) FROM devices WHERE tenant_id = ?", (tenant_id,)) as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] >= tenant["max_devices"]:
                    raise Conflict(f"tenant {tenant_id!r} has reached its limit of {row[0]} devices")
            try:
                await tx.execute(
                    "INSERT INTO devices (tenant_id, id, grp, app_version, attributes, state, enabled,"
                    " auto_provisioned, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, 0, ?, ?)",
                    (
                        tenant_id,
                        device_id,
                        group,
                        app_version,
                        json.dumps(attributes or {}),
                        DeviceState.REGISTERED.value,
                        now,
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"device {device_id!r} already exists in tenant {tenant_id!r}", field="id") from None
            await emit(
                tx, tenant_id, "endpoint/lifecycle/registered", node, endpointId=device_id, appVersionName=app_version
            )
        return await self.get(tenant_id, device_id)

    async def import_devices(
        self,
        tenant_id: str,
        device_ids: list[str],
        *,
        app_version: str | None = None,
        with_tokens: bool = False,
        certificate_bound: bool = True,
    ) -> int:
        """Bulk registration in one transaction (fleet imports, benchmarks): each id gets a device and,
        with `with_tokens`, an inactive endpoint token equal to its id, bound to the device's certificate
        (it names the device in topics; see design.md) unless `certificate_bound` is False (an
        operator's token, as `issue_token` makes). All or nothing."""
        bad = [d for d in device_ids if not is_valid_id(d)]
        if bad:
            raise Invalid(f"invalid device id {bad[0]!r}", field="id")
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            try:
                await tx.executemany(
                    "INSERT INTO devices (tenant_id, id, app_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    [(tenant_id, d, app_version, now, now) for d in device_ids],
                )
                if with_tokens:
                    await tx.executemany(
                        "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, certificate_bound,"
                        " created_at, updated_at) VALUES (?, ?, 'token', ?, 'inactive', ?, ?, ?)",
                        [(tenant_id, d, d, int(certificate_bound), now, now) for d in device_ids],
                    )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"import refused, nothing written: {exc}") from None
        return len(device_ids)

    async def get(self, tenant_id: str, device_id: str) -> Device:
        return _device(await require_device(self._db.reader, tenant_id, device_id))

    async def list(self, tenant_id: str, *, after: str | None = None, limit: int = 100) -> list[Device]:
        await require_tenant(self._db.reader, tenant_id)
        async with self._db.reader.execute(
            "SELECT * FROM devices WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
            (tenant_id, after or "", limit),
        ) as cur:
            return [_device(r) for r in await cur.fetchall()]

    async def update(
        self,
        tenant_id: str,
        device_id: str,
        *,
        group: str | None = None,
        app_version: str | None = _UNSET,
        attributes: dict[str, str] | None = None,
        enabled: bool | None = None,
    ) -> Device:
        sets: list[str] = ["updated_at = ?"]
        args: list[object] = [now_ms()]
        if group is not None:
            if not is_valid_id(group):
                raise Invalid(f"invalid group {group!r}", field="group")
            sets.append("grp = ?")
            args.append(group)
        if app_version is not _UNSET:
            sets.append("app_version = ?")
            args.append(app_version)
        if attributes is not None:
            sets.append("attributes = ?")
            args.append(json.dumps(attributes))
        if enabled is not None:
            sets.append("enabled = ?")
            args.append(int(enabled))
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            await tx.execute(
                f"UPDATE devices SET {', '.join(sets)} WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (*args, tenant_id, device_id),
            )
        return await self.get(tenant_id, device_id)

    async def set_app_version(
        self, tenant_id: str, device_id: str, app_version: str, *, expected: str | None, node: str
    ) -> str | None:
        """Records the app version a device now uses, with an `appversion-updated` event, if it still
        has the version the caller decided from (`expected`): Conflict otherwise, so a device's move
        never overwrites an operator's change made meanwhile. Returns the previous one."""
        async with self._db.transaction() as tx:
            device = await require_device(tx, tenant_id, device_id)
            previous: str | None = device["app_version"]
            if previous == app_version:
                return previous
            if previous != expected:
                raise Conflict(f"the app version of {device_id!r} changed meanwhile", field="appVersion")
            await tx.execute(
                "UPDATE devices SET app_version = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                (app_version, now_ms(), tenant_id, device_id),
            )
            await emit(
                tx,
                tenant_id,
                "endpoint/lifecycle/appversion-updated",
                node,
                endpointId=device_id,
                appVersionName=app_version,
                previousAppVersionName=previous,
            )
        return previous

    async def delete(self, tenant_id: str, device_id: str, *, node: str = "") -> None:
        """Deletes the device with its credentials, metadata and connection records. An
        auto-provisioned device leaves tombstones for its certificates (see provisioning)."""
        async with self._db.transaction() as tx:
            device = await require_device(tx, tenant_id, device_id)
            if device["auto_provisioned"]:
                await tx.execute(
                    "INSERT OR REPLACE INTO tombstones (tenant_id, fingerprint, device_id, ca_id, deleted_at)"
                    " SELECT tenant_id, auth_id, device_id, ca_id, ? FROM credentials"
                    " WHERE tenant_id = ? AND device_id = ? AND kind = 'x509'",
                    (now_ms(), tenant_id, device_id),
                )
            await tx.execute("DELETE FROM devices WHERE tenant_id = ? AND id = ?", (tenant_id, device_id))
            await emit(
                tx,
                tenant_id,
                "endpoint/lifecycle/unregistered",
                node,
                endpointId=device_id,
                appVersionName=device["app_version"],
            )
