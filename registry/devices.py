"""Device rows."""

from __future__ import annotations

import builtins
import json
import sqlite3
from typing import Any

import aiosqlite

from . import lifecycle
from .database import Database
from .device_search import DeviceQuery
from .errors import Conflict, Invalid, NotFound
from .events import emit
from .identifiers import is_valid_id
from .models import Device, DeviceState, DeviceTombstone, HistoryEntry, from_ms, now_ms

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
        config_applied=row["config_applied"],
        config_assigned=row["group_config_id"] if "group_config_id" in row.keys() else None,  # noqa: SIM118
        config_error=json.loads(row["config_error"]) if row["config_error"] else None,
    )


DEVICE_SELECT = (
    "SELECT d.*, g.config_id AS group_config_id FROM devices d"
    " LEFT JOIN device_groups g ON g.tenant_id = d.tenant_id AND g.id = d.grp"
)
"""A device with its group's current config id (what 7/CMP says it should have applied)."""


async def require_group(conn: aiosqlite.Connection, tenant_id: str, group_id: str, *, field: str = "group") -> None:
    """A device or CA names a group that must exist (422, naming the field)."""
    async with conn.execute("SELECT 1 FROM device_groups WHERE tenant_id = ? AND id = ?", (tenant_id, group_id)) as cur:
        if await cur.fetchone() is None:
            raise Invalid(f"group {group_id!r} does not exist in tenant {tenant_id!r}", field=field)


async def require_tenant(conn: aiosqlite.Connection, tenant_id: str) -> aiosqlite.Row:
    async with conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant_id!r} not found", field="tenant")
    return row


async def require_device(conn: aiosqlite.Connection, tenant_id: str, device_id: str) -> aiosqlite.Row:
    await require_tenant(conn, tenant_id)
    async with conn.execute(f"{DEVICE_SELECT} WHERE d.tenant_id = ? AND d.id = ?", (tenant_id, device_id)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"device {device_id!r} not found in tenant {tenant_id!r}", field="device")
    return row


async def _operator_transition(tx: aiosqlite.Connection, row: aiosqlite.Row, state: DeviceState, node: str) -> None:
    """An operator's transition (lifecycle.OPERATOR_TRANSITIONS); any other is a 409 naming those allowed."""
    current = DeviceState(row["state"])
    if state == current:
        return
    allowed = lifecycle.OPERATOR_TRANSITIONS[current]
    if state not in allowed:
        names = ", ".join(sorted(s.value for s in allowed)) or "none"
        raise Conflict(
            f"cannot move a {current.value} device to {state.value}; allowed from {current.value}: {names}"
            " (a credential makes it registered, applying its group's policy provisioned, DELETE deleted)",
            field="state",
        )
    await lifecycle.change_state(
        tx,
        row["tenant_id"],
        row["id"],
        current,
        state,
        reason="operator",
        node=node,
        app_version=row["app_version"],
    )


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
        reuse_deleted_id: bool = False,
    ) -> Device:
        """A new device, `enrolled` until its first credential. An id a deleted device had is refused
        (409) unless `reuse_deleted_id`: reusing one is a decision, not an accident."""
        if not is_valid_id(device_id):
            raise Invalid(f"invalid device id {device_id!r}", field="id")
        if not is_valid_id(group):
            raise Invalid(f"invalid group {group!r}", field="group")
        now = now_ms()
        async with self._db.transaction() as tx:
            tenant = await require_tenant(tx, tenant_id)
            await require_group(tx, tenant_id, group)
            async with tx.execute(
                "SELECT deleted_at FROM device_tombstones WHERE tenant_id = ? AND device_id = ?", (tenant_id, device_id)
            ) as cur:
                tombstone = await cur.fetchone()
            if tombstone is not None and not reuse_deleted_id:
                raise Conflict(
                    f"device id {device_id!r} belonged to a device deleted at {from_ms(tombstone[0]).isoformat()};"
                    " pass reuseDeletedId=true to use it again",
                    field="id",
                )
            await tx.execute(
                "DELETE FROM device_tombstones WHERE tenant_id = ? AND device_id = ?", (tenant_id, device_id)
            )
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
                        DeviceState.ENROLLED.value,
                        now,
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"device {device_id!r} already exists in tenant {tenant_id!r}", field="id") from None
            await lifecycle.record(tx, tenant_id, device_id, "created", state=DeviceState.ENROLLED.value, group=group)
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
            for start in range(0, len(device_ids), 500):
                chunk = device_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                async with tx.execute(
                    f"SELECT device_id FROM device_tombstones WHERE tenant_id = ? AND device_id IN ({marks})",  # noqa: S608
                    (tenant_id, *chunk),
                ) as cur:
                    deleted = await cur.fetchone()
                if deleted is not None:
                    raise Conflict(f"import refused, nothing written: {deleted[0]!r} belonged to a deleted device")
            try:
                state = (DeviceState.REGISTERED if with_tokens else DeviceState.ENROLLED).value
                await tx.executemany(
                    "INSERT INTO devices (tenant_id, id, app_version, state, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(tenant_id, d, app_version, state, now, now) for d in device_ids],
                )
                created = json.dumps({"state": state, "group": "default"}, separators=(",", ":"))
                await tx.executemany(
                    "INSERT INTO device_history (tenant_id, device_id, at, event, detail)"
                    " VALUES (?, ?, ?, 'created', ?)",
                    [(tenant_id, d, now, created) for d in device_ids],
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

    async def search(
        self, tenant_id: str, query: DeviceQuery, *, after: str | None = None, limit: int = 100
    ) -> tuple[builtins.list[Device], str | None]:
        """A page of the tenant's devices matching `query`, by id, and the cursor of the next page
        (None on the last)."""
        await require_tenant(self._db.reader, tenant_id)
        clauses, args = query.where()
        sql = " ".join([f"{DEVICE_SELECT} WHERE d.tenant_id = ? AND d.id > ?", *(f"AND {c}" for c in clauses)])
        rows = await self._db.read_all(f"{sql} ORDER BY d.id LIMIT ?", (tenant_id, after or "", *args, limit + 1))
        devices = [_device(r) for r in rows[:limit]]
        return devices, (devices[-1].id if len(rows) > limit else None)

    async def get(self, tenant_id: str, device_id: str) -> Device:
        return _device(await require_device(self._db.reader, tenant_id, device_id))

    async def list(self, tenant_id: str, *, after: str | None = None, limit: int = 100) -> list[Device]:
        await require_tenant(self._db.reader, tenant_id)
        async with self._db.reader.execute(
            f"{DEVICE_SELECT} WHERE d.tenant_id = ? AND d.id > ? ORDER BY d.id LIMIT ?",
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
        state: DeviceState | None = None,
        node: str = "",
    ) -> Device:
        """Every change in one transaction: a refused one (an unknown group, a transition not allowed)
        changes nothing."""
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
            row = await require_device(tx, tenant_id, device_id)
            if group is not None:
                await require_group(tx, tenant_id, group)
            await tx.execute(
                f"UPDATE devices SET {', '.join(sets)} WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (*args, tenant_id, device_id),
            )
            if state is not None:
                await _operator_transition(tx, row, state, node)
        return await self.get(tenant_id, device_id)

    async def history(self, tenant_id: str, device_id: str, *, limit: int = 100) -> builtins.list[HistoryEntry]:
        await require_device(self._db.reader, tenant_id, device_id)
        return await lifecycle.history(self._db.reader, tenant_id, device_id, limit)

    async def tombstones(self, tenant_id: str) -> builtins.list[DeviceTombstone]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all(
            "SELECT * FROM device_tombstones WHERE tenant_id = ? ORDER BY deleted_at DESC LIMIT 1000", (tenant_id,)
        )
        return [
            DeviceTombstone(
                tenant_id=r["tenant_id"],
                device_id=r["device_id"],
                group=r["grp"],
                app_version=r["app_version"],
                deleted_at=from_ms(r["deleted_at"]),
            )
            for r in rows
        ]

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
            await tx.execute(
                "INSERT OR REPLACE INTO device_tombstones (tenant_id, device_id, grp, app_version, deleted_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (tenant_id, device_id, device["grp"], device["app_version"], now_ms()),
            )
            await emit(
                tx,
                tenant_id,
                "endpoint/lifecycle/state-changed",
                node,
                endpointId=device_id,
                appVersionName=device["app_version"],
                previousState=device["state"],
                state=DeviceState.DELETED.value,
                reason="deleted",
            )
            await emit(
                tx,
                tenant_id,
                "endpoint/lifecycle/unregistered",
                node,
                endpointId=device_id,
                appVersionName=device["app_version"],
            )
