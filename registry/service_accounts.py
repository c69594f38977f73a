"""Service accounts: a tenant's northbound consumers (role `service`), MQTT username `<id>@<tenant>`.

They share the `<auth-id>@<tenant>` username form with device passwords, so an id is refused where a
device password credential of the tenant already uses it, and the other way round."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .database import Database
from .devices import require_tenant
from .errors import Conflict, Invalid, NotFound
from .identifiers import is_valid_auth_id
from .models import from_ms, now_ms


@dataclass(frozen=True)
class ServiceAccount:
    tenant_id: str
    id: str
    password_hash: str
    created_at: datetime


class ServiceAccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, tenant_id: str, account_id: str, password_hash: str) -> ServiceAccount:
        if not is_valid_auth_id(account_id):
            raise Invalid(f"invalid service account id {account_id!r}", field="id")
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            async with tx.execute(
                "SELECT 1 FROM credentials WHERE tenant_id = ? AND kind = 'password' AND auth_id = ?"
                " UNION ALL SELECT 1 FROM service_accounts WHERE tenant_id = ? AND id = ?",
                (tenant_id, account_id, tenant_id, account_id),
            ) as cur:
                if await cur.fetchone() is not None:
                    raise Conflict(f"username {account_id}@{tenant_id} is already in use", field="id")
            await tx.execute(
                "INSERT INTO service_accounts (tenant_id, id, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (tenant_id, account_id, password_hash, now_ms()),
            )
        found = await self.find(tenant_id, account_id)
        assert found is not None
        return found

    async def find(self, tenant_id: str, account_id: str) -> ServiceAccount | None:
        row = await self._db.read_one(
            "SELECT sa.* FROM service_accounts sa JOIN tenants t ON t.id = sa.tenant_id"
            " WHERE sa.tenant_id = ? AND sa.id = ? AND t.enabled = 1",
            (tenant_id, account_id),
        )
        if row is None:
            return None
        return ServiceAccount(row["tenant_id"], row["id"], row["password_hash"], from_ms(row["created_at"]))

    async def list(self, tenant_id: str) -> list[str]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all("SELECT id FROM service_accounts WHERE tenant_id = ? ORDER BY id", (tenant_id,))
        return [r["id"] for r in rows]

    async def delete(self, tenant_id: str, account_id: str) -> None:
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            cur = await tx.execute(
                "DELETE FROM service_accounts WHERE tenant_id = ? AND id = ?", (tenant_id, account_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"service account {account_id!r} not found", field="serviceAccount")
