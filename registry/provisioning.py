"""Auto-provisioning: an unknown certificate from a CA that allows it becomes a device, in ONE transaction.

Exactly once under concurrency: transactions are serialized by the writer lock, and each one
first looks for the certificate again, so the 2nd..Nth of simultaneous first connects find the
records the 1st created and answer with them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import aiosqlite

from . import lifecycle
from .credentials import AUTH_SELECT, auth_record
from .database import Database
from .events import emit
from .models import AuthRecord, DeviceState, Tombstone, from_ms, now_ms


class ProvisioningRefused(Exception):
    """Nothing was written. `reason` is a refusal code for logs and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProvisioningRequest:
    tenant_id: str
    ca_id: str
    fingerprint: str
    device_id: str
    auth_id: str
    group: str
    app_version: str | None
    attributes: dict[str, str]
    node: str


class ProvisioningStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def tombstone(self, tenant_id: str, fingerprint: str) -> Tombstone | None:
        row = await self._db.read_one(
            "SELECT * FROM tombstones WHERE tenant_id = ? AND fingerprint = ?", (tenant_id, fingerprint)
        )
        return None if row is None else _tombstone(row)

    async def tombstones(self, tenant_id: str) -> list[Tombstone]:
        rows = await self._db.read_all("SELECT * FROM tombstones WHERE tenant_id = ? ORDER BY deleted_at", (tenant_id,))
        return [_tombstone(r) for r in rows]

    async def clear_tombstone(self, tenant_id: str, fingerprint: str) -> bool:
        """Lets the certificate provision again: the operator's decision covers the device id it had too
        (its device tombstone goes with it, so the id is reused on purpose)."""
        async with self._db.transaction() as tx:
            rows = await tx.execute_fetchall(
                "DELETE FROM tombstones WHERE tenant_id = ? AND fingerprint = ? RETURNING device_id",
                (tenant_id, fingerprint),
            )
            for row in rows:
                await tx.execute(
                    "DELETE FROM device_tombstones WHERE tenant_id = ? AND device_id = ?", (tenant_id, row[0])
                )
        return bool(rows)

    async def check(self, req: ProvisioningRequest) -> None:
        """The dry run of `provision`: raises what it would refuse with, writes nothing."""
        await _check(self._db.reader, req)

    async def provision(self, req: ProvisioningRequest) -> tuple[AuthRecord, bool]:
        """Returns (the x509 credential's auth record, created_now). Raises ProvisioningRefused."""
        now = now_ms()
        async with self._db.transaction() as tx:
            async with tx.execute(AUTH_SELECT + " WHERE c.kind = 'x509' AND c.auth_id = ?", (req.fingerprint,)) as cur:
                row = await cur.fetchone()
            if row is not None:  # a concurrent first connect won the race
                return auth_record(row), False
            await _check(tx, req)
            try:
                await tx.execute(
                    "INSERT INTO devices (tenant_id, id, grp, app_version, attributes, state, enabled,"
                    " auto_provisioned, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?)",
                    (
                        req.tenant_id,
                        req.device_id,
                        req.group,
                        req.app_version,
                        json.dumps(req.attributes),
                        DeviceState.REGISTERED.value,  # provisioned once it applies its group's policy
                        now,
                        now,
                    ),
                )
                await tx.execute(
                    "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, ca_id, label, created_at,"
                    " updated_at) VALUES (?, ?, 'x509', ?, 'active', ?, ?, ?, ?)",
                    (req.tenant_id, req.device_id, req.fingerprint, req.ca_id, req.auth_id, now, now),
                )
                await tx.execute(
                    "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, certificate_bound,"
                    " created_at, updated_at) VALUES (?, ?, 'token', ?, 'active', 1, ?, ?)",
                    (req.tenant_id, req.device_id, req.device_id, now, now),
                )
            except sqlite3.IntegrityError as exc:
                raise ProvisioningRefused("conflict", str(exc)) from None
            await lifecycle.record(
                tx,
                req.tenant_id,
                req.device_id,
                "created",
                state=DeviceState.REGISTERED.value,
                group=req.group,
                autoProvisioned=True,
                caId=req.ca_id,
            )
            await emit(
                tx,
                req.tenant_id,
                "endpoint/lifecycle/registered",
                req.node,
                endpointId=req.device_id,
                appVersionName=req.app_version,
                autoProvisioned=True,
                caId=req.ca_id,
            )
            async with tx.execute(AUTH_SELECT + " WHERE c.kind = 'x509' AND c.auth_id = ?", (req.fingerprint,)) as cur:
                created = await cur.fetchone()
        assert created is not None
        return auth_record(created), True


def _tombstone(row: object) -> Tombstone:
    r = row  # aiosqlite.Row
    return Tombstone(
        tenant_id=r["tenant_id"],  # type: ignore[index]
        fingerprint=r["fingerprint"],  # type: ignore[index]
        device_id=r["device_id"],  # type: ignore[index]
        ca_id=r["ca_id"],  # type: ignore[index]
        deleted_at=from_ms(r["deleted_at"]),  # type: ignore[index]
    )


async def _check(conn: aiosqlite.Connection, req: ProvisioningRequest) -> None:
    """Everything that refuses a provisioning, in one place: the CONNECT path runs it inside the
    writing transaction, the dry-run API on the reader. Raises ProvisioningRefused."""
    async with conn.execute(
        "SELECT 1 FROM tombstones WHERE tenant_id = ? AND fingerprint = ?", (req.tenant_id, req.fingerprint)
    ) as cur:
        if await cur.fetchone() is not None:
            raise ProvisioningRefused(
                "deleted", "this certificate's device was deleted by an operator; clear its tombstone to allow it"
            )
    async with conn.execute(
        "SELECT 1 FROM device_tombstones WHERE tenant_id = ? AND device_id = ?", (req.tenant_id, req.device_id)
    ) as cur:
        if await cur.fetchone() is not None:
            raise ProvisioningRefused(
                "device_id_deleted",
                f"device id {req.device_id!r} belonged to a deleted device; an operator reuses it on purpose"
                " (POST .../devices?reuseDeletedId=true) or clears it",
            )
    async with conn.execute("SELECT enabled, max_devices FROM tenants WHERE id = ?", (req.tenant_id,)) as cur:
        tenant = await cur.fetchone()
    if tenant is None or not tenant["enabled"]:
        raise ProvisioningRefused("tenant_disabled", "tenant is disabled or gone")
    if tenant["max_devices"] is not None:
        async with conn.execute("SELECT count(*) FROM devices WHERE tenant_id = ?", (req.tenant_id,)) as cur:
            count = (await cur.fetchone() or (0,))[0]
        if count >= tenant["max_devices"]:
            raise ProvisioningRefused("device_quota", f"tenant has reached its limit of {count} devices")
    async with conn.execute(
        "SELECT 1 FROM devices WHERE tenant_id = ? AND id = ?", (req.tenant_id, req.device_id)
    ) as cur:
        if await cur.fetchone() is not None:
            raise ProvisioningRefused(
                "device_id_taken", f"device {req.device_id!r} exists and does not own this certificate"
            )
    # Within the tenant only: its bound token (= the device id) names it in the tenant's topics. Across
    # tenants nothing collides (topics are routed per tenant), and a global check told a tenant whether
    # any string was another tenant's live token.
    async with conn.execute(
        "SELECT 1 FROM credentials WHERE tenant_id = ? AND kind = 'token' AND auth_id = ?",
        (req.tenant_id, req.device_id),
    ) as cur:
        if await cur.fetchone() is not None:
            # not echoed: the id is another device's live token
            raise ProvisioningRefused(
                "token_taken", "the device id is already another device's endpoint token in this tenant"
            )
