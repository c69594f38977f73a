"""Device groups: every device is in exactly one group of its tenant, and a group's policy (a JSON
object with a content-hash `configId`) is what 7/CMP delivers to its devices."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiosqlite

from . import lifecycle
from .database import Database
from .devices import require_group, require_tenant
from .errors import Conflict, Invalid, NotFound
from .events import emit
from .identifiers import is_valid_id
from .models import DeviceState, Group, from_ms, now_ms

DEFAULT_GROUP = "default"
_GROUP_SELECT = (
    "SELECT g.*, (SELECT COUNT(*) FROM devices d WHERE d.tenant_id = g.tenant_id AND d.grp = g.id) AS devices"
    " FROM device_groups g"
)


def canonical_config(config: dict[str, Any]) -> tuple[str, str]:
    """(canonical JSON text, its config id): the same document always has the same id."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text, hashlib.sha256(text.encode()).hexdigest()


def _group(row: aiosqlite.Row) -> Group:
    return Group(
        tenant_id=row["tenant_id"],
        id=row["id"],
        description=row["description"],
        config=json.loads(row["config"]),
        config_id=row["config_id"],
        devices=row["devices"],
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
    )


def _check_id(group_id: str, field: str = "id") -> None:
    if not is_valid_id(group_id):
        raise Invalid(f"invalid group id {group_id!r}", field=field)


class GroupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, tenant_id: str, group_id: str, *, description: str = "") -> Group:
        _check_id(group_id)
        _text, config_id = canonical_config({})
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            async with tx.execute(
                "INSERT INTO device_groups (tenant_id, id, description, config_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (tenant_id, group_id, description, config_id, now, now),
            ) as cur:
                if await cur.fetchone() is None:
                    raise Conflict(f"group {group_id!r} already exists in tenant {tenant_id!r}", field="id")
        return await self.get(tenant_id, group_id)

    async def get(self, tenant_id: str, group_id: str) -> Group:
        row = await self._db.read_one(f"{_GROUP_SELECT} WHERE g.tenant_id = ? AND g.id = ?", (tenant_id, group_id))
        if row is None:
            await require_tenant(self._db.reader, tenant_id)
            raise NotFound(f"group {group_id!r} not found in tenant {tenant_id!r}", field="group")
        return _group(row)

    async def of_tenant(self, tenant_id: str) -> list[Group]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all(f"{_GROUP_SELECT} WHERE g.tenant_id = ? ORDER BY g.id", (tenant_id,))
        return [_group(r) for r in rows]

    async def update(
        self, tenant_id: str, group_id: str, *, new_id: str | None = None, description: str | None = None
    ) -> Group:
        """Describe, or rename: the group's devices and the CAs that provision into it follow."""
        if new_id is not None:
            _check_id(new_id)
        if group_id == DEFAULT_GROUP and new_id not in (None, DEFAULT_GROUP):
            raise Conflict("the default group cannot be renamed: new devices go there", field="id")
        async with self._db.transaction() as tx:
            await self._require(tx, tenant_id, group_id)
            sets: list[str] = ["updated_at = ?"]
            args: list[object] = [now_ms()]
            if description is not None:
                sets.append("description = ?")
                args.append(description)
            if new_id is not None and new_id != group_id:
                async with tx.execute(
                    "SELECT 1 FROM device_groups WHERE tenant_id = ? AND id = ?", (tenant_id, new_id)
                ) as cur:
                    if await cur.fetchone() is not None:
                        raise Conflict(f"group {new_id!r} already exists", field="id")
                sets.append("id = ?")
                args.append(new_id)
            await tx.execute(
                f"UPDATE device_groups SET {', '.join(sets)} WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (*args, tenant_id, group_id),
            )
            if new_id is not None and new_id != group_id:
                for table in ("devices", "trusted_cas"):
                    await tx.execute(
                        f"UPDATE {table} SET grp = ? WHERE tenant_id = ? AND grp = ?",  # noqa: S608
                        (new_id, tenant_id, group_id),
                    )
        return await self.get(tenant_id, new_id or group_id)

    async def delete(self, tenant_id: str, group_id: str, *, move_to: str | None = None) -> list[str]:
        """Refused (409) while devices or CAs use the group, unless they move to `move_to`; returns the
        devices moved."""
        if group_id == DEFAULT_GROUP:
            raise Conflict("the default group cannot be deleted: new devices go there", field="group")
        async with self._db.transaction() as tx:
            await self._require(tx, tenant_id, group_id)
            members = [
                r[0]
                for r in await tx.execute_fetchall(
                    "SELECT id FROM devices WHERE tenant_id = ? AND grp = ? ORDER BY id", (tenant_id, group_id)
                )
            ]
            cas = list(
                await tx.execute_fetchall(
                    "SELECT id FROM trusted_cas WHERE tenant_id = ? AND grp = ?", (tenant_id, group_id)
                )
            )
            if move_to is None and (members or cas):
                raise Conflict(
                    f"group {group_id!r} has {len(members)} device(s) and {len(cas)} trusted CA(s) provisioning"
                    " into it; move them first or delete with ?moveTo=<group>",
                    field="group",
                )
            if move_to is not None:
                if move_to == group_id:
                    raise Invalid("moveTo must be another group", field="moveTo")
                await require_group(tx, tenant_id, move_to, field="moveTo")
                for table in ("devices", "trusted_cas"):
                    await tx.execute(
                        f"UPDATE {table} SET grp = ?, updated_at = ? WHERE tenant_id = ? AND grp = ?",  # noqa: S608
                        (move_to, now_ms(), tenant_id, group_id),
                    )
            await tx.execute("DELETE FROM device_groups WHERE tenant_id = ? AND id = ?", (tenant_id, group_id))
        return members

    async def move_devices(self, tenant_id: str, group_id: str, device_ids: list[str]) -> list[str]:
        """All or nothing: an unknown device id refuses the move. Returns those whose group changed."""
        async with self._db.transaction() as tx:
            await self._require(tx, tenant_id, group_id)
            marks = ",".join("?" * len(device_ids))
            rows = await tx.execute_fetchall(
                f"SELECT id, grp FROM devices WHERE tenant_id = ? AND id IN ({marks})",  # noqa: S608
                (tenant_id, *device_ids),
            )
            found = {r["id"]: r["grp"] for r in rows}
            missing = [d for d in device_ids if d not in found]
            if missing:
                raise NotFound(f"unknown device(s): {', '.join(missing[:10])}", field="devices")
            moved = [d for d in dict.fromkeys(device_ids) if found[d] != group_id]
            if moved:
                marks = ",".join("?" * len(moved))
                await tx.execute(
                    f"UPDATE devices SET grp = ?, updated_at = ? WHERE tenant_id = ? AND id IN ({marks})",  # noqa: S608
                    (group_id, now_ms(), tenant_id, *moved),
                )
        return moved

    async def set_policy(self, tenant_id: str, group_id: str, config: dict[str, Any], *, node: str) -> Group:
        text, config_id = canonical_config(config)
        async with self._db.transaction() as tx:
            await self._require(tx, tenant_id, group_id)
            await tx.execute(
                "UPDATE device_groups SET config = ?, config_id = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                (text, config_id, now_ms(), tenant_id, group_id),
            )
            await emit(tx, tenant_id, "group/policy-updated", node, group=group_id, configId=config_id)
        return await self.get(tenant_id, group_id)

    async def device_config(self, tenant_id: str, device_id: str) -> tuple[str, str]:
        """(config id, canonical JSON) of the device's group's policy."""
        row = await self._db.read_one(
            "SELECT g.config_id, g.config FROM devices d JOIN device_groups g ON g.tenant_id = d.tenant_id"
            " AND g.id = d.grp WHERE d.tenant_id = ? AND d.id = ?",
            (tenant_id, device_id),
        )
        if row is None:
            raise NotFound(f"device {device_id!r} not found in tenant {tenant_id!r}", field="device")
        return row["config_id"], row["config"]

    async def record_applied(
        self,
        tenant_id: str,
        device_id: str,
        config_id: str,
        status_code: int,
        reason_phrase: str | None,
        *,
        node: str,
    ) -> None:
        """A device's 7/CMP `applied` report for its group's current policy (Conflict for any other):
        a 2xx status records it as applied (the first one moves registered -> provisioned), any other
        is kept as its last apply error. Both go to its history."""
        async with self._db.transaction() as tx:
            async with tx.execute(
                "SELECT d.state, d.app_version, d.config_applied, g.id AS grp, g.config_id FROM devices d"
                " JOIN device_groups g"
                " ON g.tenant_id = d.tenant_id AND g.id = d.grp WHERE d.tenant_id = ? AND d.id = ?",
                (tenant_id, device_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"device {device_id!r} not found in tenant {tenant_id!r}", field="device")
            if config_id != row["config_id"]:
                raise Conflict(f"not the current policy of group {row['grp']!r} ({row['config_id']})", field="configId")
            if 200 <= status_code < 300:
                await tx.execute(
                    "UPDATE devices SET config_applied = ?, config_error = NULL WHERE tenant_id = ? AND id = ?",
                    (config_id, tenant_id, device_id),
                )
                if row["config_applied"] != config_id:  # the same report again is not news
                    await lifecycle.record(tx, tenant_id, device_id, "config-applied", configId=config_id)
                if row["state"] == DeviceState.REGISTERED.value:
                    await lifecycle.change_state(
                        tx,
                        tenant_id,
                        device_id,
                        DeviceState.REGISTERED,
                        DeviceState.PROVISIONED,
                        reason="applied its group's policy",
                        node=node,
                        app_version=row["app_version"],
                    )
                return
            error = {"configId": config_id, "statusCode": status_code, "reasonPhrase": reason_phrase, "at": now_ms()}
            await tx.execute(
                "UPDATE devices SET config_error = ? WHERE tenant_id = ? AND id = ?",
                (json.dumps(error, separators=(",", ":")), tenant_id, device_id),
            )
            await lifecycle.record(
                tx,
                tenant_id,
                device_id,
                "config-failed",
                configId=config_id,
                statusCode=status_code,
                reasonPhrase=reason_phrase,
            )

    async def members(self, tenant_id: str, group_id: str) -> list[str]:
        rows = await self._db.read_all(
            "SELECT id FROM devices WHERE tenant_id = ? AND grp = ? ORDER BY id", (tenant_id, group_id)
        )
        return [r["id"] for r in rows]

    @staticmethod
    async def _require(tx: aiosqlite.Connection, tenant_id: str, group_id: str) -> None:
        await require_tenant(tx, tenant_id)
        async with tx.execute(
            "SELECT 1 FROM device_groups WHERE tenant_id = ? AND id = ?", (tenant_id, group_id)
        ) as cur:
            if await cur.fetchone() is None:
                raise NotFound(f"group {group_id!r} not found in tenant {tenant_id!r}", field="group")
