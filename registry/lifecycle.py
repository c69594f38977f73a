"""Device lifecycle (Device Trust Manager states): enrolled -> registered -> provisioned, deleted.

Every state change is written with an `endpoint/lifecycle/state-changed` event and a row of the
device's history, in the caller's transaction.
"""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from .events import emit
from .models import DeviceState, HistoryEntry, from_ms, now_ms

HISTORY_KEPT = 100
"""History rows kept per device and kind (the newest): the lifecycle (created, state changes) and the
policy reports (applied, failed) are kept apart, so a device reporting again and again cannot push
its own lifecycle out of its history."""
LIFECYCLE_EVENTS = ("created", "state-changed")

OPERATOR_TRANSITIONS: dict[DeviceState, frozenset[DeviceState]] = {
    DeviceState.ENROLLED: frozenset(),
    DeviceState.REGISTERED: frozenset(),
    DeviceState.PROVISIONED: frozenset({DeviceState.REGISTERED}),
    DeviceState.DELETED: frozenset(),
}
"""What an operator may ask for (PATCH `state`); deletion is DELETE. The rest happens to a device:
its first credential (enrolled -> registered), its last one gone (-> enrolled), its first successful
apply of its group's policy (registered -> provisioned)."""


async def record(tx: aiosqlite.Connection, tenant_id: str, device_id: str, event: str, **detail: Any) -> None:
    """One history row, the newest HISTORY_KEPT kept."""
    await tx.execute(
        "INSERT INTO device_history (tenant_id, device_id, at, event, detail) VALUES (?, ?, ?, ?, ?)",
        (tenant_id, device_id, now_ms(), event, json.dumps(detail, separators=(",", ":"))),
    )
    same_kind = "IN" if event in LIFECYCLE_EVENTS else "NOT IN"
    await tx.execute(
        f"DELETE FROM device_history WHERE tenant_id = ?1 AND device_id = ?2 AND event {same_kind} (?4, ?5)"  # noqa: S608
        " AND id <= (SELECT id FROM device_history WHERE tenant_id = ?1 AND device_id = ?2"
        f" AND event {same_kind} (?4, ?5) ORDER BY id DESC LIMIT 1 OFFSET ?3)",
        (tenant_id, device_id, HISTORY_KEPT, *LIFECYCLE_EVENTS),
    )


async def change_state(
    tx: aiosqlite.Connection,
    tenant_id: str,
    device_id: str,
    previous: DeviceState,
    state: DeviceState,
    *,
    reason: str,
    node: str,
    app_version: str | None = None,
) -> None:
    await tx.execute(
        "UPDATE devices SET state = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
        (state.value, now_ms(), tenant_id, device_id),
    )
    await record(
        tx, tenant_id, device_id, "state-changed", previousState=previous.value, state=state.value, reason=reason
    )
    await emit(
        tx,
        tenant_id,
        "endpoint/lifecycle/state-changed",
        node,
        endpointId=device_id,
        appVersionName=app_version,
        previousState=previous.value,
        state=state.value,
        reason=reason,
    )


async def credential_added(tx: aiosqlite.Connection, tenant_id: str, device_id: str, *, node: str) -> None:
    """enrolled -> registered with the device's first credential."""
    async with tx.execute(
        "SELECT state, app_version FROM devices WHERE tenant_id = ? AND id = ?", (tenant_id, device_id)
    ) as cur:
        row = await cur.fetchone()
    if row is not None and row["state"] == DeviceState.ENROLLED.value:
        await change_state(
            tx,
            tenant_id,
            device_id,
            DeviceState.ENROLLED,
            DeviceState.REGISTERED,
            reason="credential added",
            node=node,
            app_version=row["app_version"],
        )


async def credential_removed(tx: aiosqlite.Connection, tenant_id: str, device_id: str, *, node: str) -> None:
    """-> enrolled when the device has no credential left: it cannot connect any more. A token bound to
    the device (its name in topics, kept when its password goes) authenticates nothing, so it does not
    count."""
    async with tx.execute(
        "SELECT d.state, d.app_version, (SELECT COUNT(*) FROM credentials c WHERE c.tenant_id = d.tenant_id"
        " AND c.device_id = d.id AND NOT (c.kind = 'token' AND c.certificate_bound = 1)) AS credentials"
        " FROM devices d WHERE d.tenant_id = ? AND d.id = ?",
        (tenant_id, device_id),
    ) as cur:
        row = await cur.fetchone()
    if row is not None and row["credentials"] == 0 and row["state"] != DeviceState.ENROLLED.value:
        await change_state(
            tx,
            tenant_id,
            device_id,
            DeviceState(row["state"]),
            DeviceState.ENROLLED,
            reason="last credential removed",
            node=node,
            app_version=row["app_version"],
        )


async def history(conn: aiosqlite.Connection, tenant_id: str, device_id: str, limit: int) -> list[HistoryEntry]:
    async with conn.execute(
        "SELECT at, event, detail FROM device_history WHERE tenant_id = ? AND device_id = ? ORDER BY id DESC LIMIT ?",
        (tenant_id, device_id, limit),
    ) as cur:
        rows = await cur.fetchall()
    return [HistoryEntry(at=from_ms(r["at"]), event=r["event"], detail=json.loads(r["detail"])) for r in rows]
