"""Trusted CAs: each belongs to one tenant, identified by the SHA-256 of its public key. An upload
proves its key over the tenant's registration code (pki/ca_proof.py), which stays until rotated: on
request, and whenever the tenant removes a CA, so no proof made before can bring one back."""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

import aiosqlite

from .database import Database
from .devices import require_group, require_tenant
from .errors import Conflict, Invalid, NotFound
from .models import CaProof, RegistrationCode, TrustedCa, from_ms, now_ms, to_ms

_UNSET: Any = object()
_UPDATABLE = {
    "enabled": "enabled",
    "auto_provisioning_enabled": "auto_provisioning_enabled",
    "device_id_template": "device_id_template",
    "auth_id_template": "auth_id_template",
    "group": "grp",
    "app_version": "app_version",
    "provisioning_rate_per_minute": "provisioning_rate_per_minute",
}


def _ca(row: aiosqlite.Row) -> TrustedCa:
    return TrustedCa(
        id=row["id"],
        tenant_id=row["tenant_id"],
        subject_dn=row["subject_dn"],
        spki_sha256=row["spki_sha256"],
        cert_sha256=row["cert_sha256"],
        pem=row["pem"],
        key_algorithm=row["key_algorithm"],
        not_before=from_ms(row["not_before"]),
        not_after=from_ms(row["not_after"]),
        enabled=bool(row["enabled"]),
        auto_provisioning_enabled=bool(row["auto_provisioning_enabled"]),
        device_id_template=row["device_id_template"],
        auth_id_template=row["auth_id_template"],
        group=row["grp"],
        app_version=row["app_version"],
        provisioning_rate_per_minute=row["provisioning_rate_per_minute"],
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
        proof=CaProof(row["proof"]),
    )


def _new_code() -> str:
    return secrets.token_hex(32)  # 64 characters: the most a CN may hold


async def _rotate(tx: aiosqlite.Connection, tenant_id: str) -> None:
    await tx.execute(
        "INSERT INTO ca_registration_codes (tenant_id, code, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (tenant_id) DO UPDATE SET code = excluded.code, created_at = excluded.created_at",
        (tenant_id, _new_code(), now_ms()),
    )


async def _check_proof(tx: aiosqlite.Connection, tenant_id: str, proven_code: str) -> None:
    async with tx.execute("SELECT code FROM ca_registration_codes WHERE tenant_id = ?", (tenant_id,)) as cur:
        row = await cur.fetchone()
    if row is None or not secrets.compare_digest(row[0].encode(), proven_code.encode()):
        raise Invalid(
            f"the verification certificate's subject CN is not the registration code of tenant {tenant_id!r}"
            f" (GET /v1/tenants/{tenant_id}/trusted-cas/registration-code; it changes when the tenant removes a"
            " CA or rotates it): sign a verification certificate over the current one",
            field="verificationCert",
        )


class TrustedCaStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def registration_code(self, tenant_id: str) -> RegistrationCode:
        """The tenant's current code, made on first use."""
        await require_tenant(self._db.reader, tenant_id)
        row = await self._db.read_one("SELECT * FROM ca_registration_codes WHERE tenant_id = ?", (tenant_id,))
        if row is None:
            async with self._db.transaction() as tx:
                await require_tenant(tx, tenant_id)
                await tx.execute(
                    "INSERT INTO ca_registration_codes (tenant_id, code, created_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (tenant_id) DO NOTHING",
                    (tenant_id, _new_code(), now_ms()),
                )
            row = await self._db.read_one("SELECT * FROM ca_registration_codes WHERE tenant_id = ?", (tenant_id,))
        assert row is not None
        return RegistrationCode(tenant_id=tenant_id, code=row["code"], created_at=from_ms(row["created_at"]))

    async def rotate_registration_code(self, tenant_id: str) -> RegistrationCode:
        """A new code: every verification certificate made over the old one is refused from now on."""
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            await _rotate(tx, tenant_id)
        return await self.registration_code(tenant_id)

    async def create(self, ca: TrustedCa, *, proven_code: str | None) -> TrustedCa:
        """`ca` as built by the caller from a validated upload; id and timestamps are set here.
        `proven_code`: the CN of its verification certificate, checked against the tenant's code in
        the same transaction; None only when `ca.proof` says the proof was waived."""
        now = now_ms()
        ca_id = ca.spki_sha256[:16]
        if ca.proof != (CaProof.WAIVED if proven_code is None else CaProof.VERIFIED):
            raise ValueError("a CA is created with a proof, or with the proof waived")
        async with self._db.transaction() as tx:
            await require_tenant(tx, ca.tenant_id)
            if proven_code is not None:  # before the conflict check: only the key's holder learns who holds it
                await _check_proof(tx, ca.tenant_id, proven_code)
            await require_group(tx, ca.tenant_id, ca.group)
            async with tx.execute("SELECT tenant_id FROM trusted_cas WHERE spki_sha256 = ?", (ca.spki_sha256,)) as cur:
                row = await cur.fetchone()
            if row is not None:
                owner = row[0]
                if owner == ca.tenant_id:
                    raise Conflict(f"this CA is already trusted by tenant {owner!r} (id {ca_id})", field="cert")
                raise Conflict(
                    f"this CA (same public key) is already trusted by another tenant, {owner!r}; "
                    "a CA belongs to exactly one tenant",
                    field="cert",
                )
            try:
                await tx.execute(
                    "INSERT INTO trusted_cas (id, tenant_id, spki_sha256, cert_sha256, subject_dn, pem, key_algorithm,"
                    " not_before, not_after, enabled, auto_provisioning_enabled, device_id_template, auth_id_template,"
                    " grp, app_version, provisioning_rate_per_minute, created_at, updated_at, proof)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ca_id,
                        ca.tenant_id,
                        ca.spki_sha256,
                        ca.cert_sha256,
                        ca.subject_dn,
                        ca.pem,
                        ca.key_algorithm,
                        to_ms(ca.not_before),
                        to_ms(ca.not_after),
                        int(ca.enabled),
                        int(ca.auto_provisioning_enabled),
                        ca.device_id_template,
                        ca.auth_id_template,
                        ca.group,
                        ca.app_version,
                        ca.provisioning_rate_per_minute,
                        now,
                        now,
                        ca.proof.value,
                    ),
                )
            except sqlite3.IntegrityError:
                raise Conflict("this CA is already trusted", field="cert") from None
        return await self.get(ca.tenant_id, ca_id)

    async def all_enabled(self) -> list[TrustedCa]:
        """What the TLS listener trusts: enabled CAs of enabled tenants."""
        rows = await self._db.read_all(
            "SELECT ca.* FROM trusted_cas ca JOIN tenants t ON t.id = ca.tenant_id"
            " WHERE ca.enabled = 1 AND t.enabled = 1"
        )
        return [_ca(r) for r in rows]

    async def get(self, tenant_id: str, ca_id: str) -> TrustedCa:
        await require_tenant(self._db.reader, tenant_id)
        row = await self._db.read_one("SELECT * FROM trusted_cas WHERE tenant_id = ? AND id = ?", (tenant_id, ca_id))
        if row is None:
            raise NotFound(f"trusted CA {ca_id!r} not found in tenant {tenant_id!r}", field="ca")
        return _ca(row)

    async def list(self, tenant_id: str) -> list[TrustedCa]:
        await require_tenant(self._db.reader, tenant_id)
        rows = await self._db.read_all(
            "SELECT * FROM trusted_cas WHERE tenant_id = ? ORDER BY created_at", (tenant_id,)
        )
        return [_ca(r) for r in rows]

    async def update(self, tenant_id: str, ca_id: str, **changes: Any) -> TrustedCa:
        sets: list[str] = ["updated_at = ?"]
        args: list[object] = [now_ms()]
        for name, value in changes.items():
            column = _UPDATABLE[name]
            sets.append(f"{column} = ?")
            args.append(int(value) if isinstance(value, bool) else value)
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            if changes.get("group") is not None:
                await require_group(tx, tenant_id, changes["group"])
            cur = await tx.execute(
                f"UPDATE trusted_cas SET {', '.join(sets)} WHERE tenant_id = ? AND id = ?",  # noqa: S608
                (*args, tenant_id, ca_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"trusted CA {ca_id!r} not found in tenant {tenant_id!r}", field="ca")
        return await self.get(tenant_id, ca_id)

    async def delete(self, tenant_id: str, ca_id: str) -> None:
        async with self._db.transaction() as tx:
            await require_tenant(tx, tenant_id)
            cur = await tx.execute("DELETE FROM trusted_cas WHERE tenant_id = ? AND id = ?", (tenant_id, ca_id))
            if cur.rowcount == 0:
                raise NotFound(f"trusted CA {ca_id!r} not found in tenant {tenant_id!r}", field="ca")
            await _rotate(tx, tenant_id)  # a proof made for it cannot add it back
