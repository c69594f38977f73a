"""Credentials: endpoint tokens, hashed passwords, X.509 certificate fingerprints.

The CONNECT path uses only `find_token`, `find_password` and `usable_tokens`: one indexed
query each (and `is_bound_token` after an unknown one). Everything else is management.

Two kinds of token: a bearer token (`certificate_bound` 0, issued by an operator) authenticates a
CONNECT and is unique across tenants; a bound one (the device id, made with a certificate or a
password) only names its device in topics and is unique within its tenant (migration 0013).
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from . import lifecycle
from .database import Database
from .devices import require_device
from .errors import Conflict, Invalid, NotFound
from .identifiers import bearer_token_problem, generate_token, is_valid_auth_id, is_valid_token
from .models import (
    ALLOWED_TRANSITIONS,
    AuthRecord,
    Credential,
    CredentialKind,
    CredentialState,
    DeviceState,
    from_ms,
    from_ms_or_none,
    now_ms,
)

AUTH_SELECT = """
SELECT c.id AS credential_id, c.tenant_id, c.device_id, c.kind, c.auth_id, c.secret, c.state, c.ca_id, c.label,
       c.certificate_bound, c.updated_at,
       d.enabled AS device_enabled, d.state AS device_state, d.app_version,
       t.enabled AS tenant_enabled, t.max_connections AS tenant_max_connections,
       t.max_retained_messages AS tenant_max_retained_messages, t.max_retained_bytes AS tenant_max_retained_bytes
FROM credentials c
JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id
JOIN tenants t ON t.id = c.tenant_id
"""


def _credential(row: aiosqlite.Row) -> Credential:
    return Credential(
        tenant_id=row["tenant_id"],
        device_id=row["device_id"],
        kind=CredentialKind(row["kind"]),
        auth_id=row["auth_id"],
        state=CredentialState(row["state"]),
        created_at=from_ms(row["created_at"]),
        updated_at=from_ms(row["updated_at"]),
        last_used_at=from_ms_or_none(row["last_used_at"]),
        certificate_bound=bool(row["certificate_bound"]),
        ca_id=row["ca_id"],
        label=row["label"],
    )


def auth_record(row: aiosqlite.Row) -> AuthRecord:
    return AuthRecord(
        credential_id=row["credential_id"],
        tenant_id=row["tenant_id"],
        device_id=row["device_id"],
        kind=CredentialKind(row["kind"]),
        auth_id=row["auth_id"],
        secret=row["secret"],
        state=CredentialState(row["state"]),
        device_enabled=bool(row["device_enabled"]),
        device_state=DeviceState(row["device_state"]),
        tenant_enabled=bool(row["tenant_enabled"]),
        app_version=row["app_version"],
        ca_id=row["ca_id"],
        label=row["label"],
        certificate_bound=bool(row["certificate_bound"]),
        version=row["updated_at"],
        tenant_max_connections=row["tenant_max_connections"],
        tenant_max_retained_messages=row["tenant_max_retained_messages"],
        tenant_max_retained_bytes=row["tenant_max_retained_bytes"],
    )


class CredentialStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- CONNECT path ---------------------------------------------------------------------------

    async def find_token(self, token: str) -> AuthRecord | None:
        """The bearer token `token` (unique across tenants); bound tokens are not credentials."""
        row = await self._db.read_one(
            AUTH_SELECT + " WHERE c.kind = 'token' AND c.certificate_bound = 0 AND c.auth_id = ?", (token,)
        )
        return None if row is None else auth_record(row)

    async def is_bound_token(self, token: str) -> bool:
        """Some device, in some tenant, is named `token` (why a CONNECT with it alone was refused)."""
        row = await self._db.read_one(
            "SELECT 1 FROM credentials WHERE kind = 'token' AND certificate_bound = 1 AND auth_id = ? LIMIT 1",
            (token,),
        )
        return row is not None

    async def find_tenant_token(self, tenant_id: str, token: str) -> AuthRecord | None:
        """The token `token` of the tenant, bearer or bound (a token names one device in its tenant)."""
        row = await self._db.read_one(
            AUTH_SELECT + " WHERE c.tenant_id = ? AND c.kind = 'token' AND c.auth_id = ?", (tenant_id, token)
        )
        return None if row is None else auth_record(row)

    async def find_x509(self, fingerprint: str) -> AuthRecord | None:
        row = await self._db.read_one(AUTH_SELECT + " WHERE c.kind = 'x509' AND c.auth_id = ?", (fingerprint,))
        return None if row is None else auth_record(row)

    async def find_password(self, tenant_id: str, auth_id: str) -> AuthRecord | None:
        row = await self._db.read_one(
            AUTH_SELECT + " WHERE c.tenant_id = ? AND c.kind = 'password' AND c.auth_id = ?", (tenant_id, auth_id)
        )
        return None if row is None else auth_record(row)

    async def usable_tokens(self, tenant_id: str, device_id: str) -> list[tuple[str, bool]]:
        """(token, bound) of each token the device may use in topics now."""
        rows = await self._db.read_all(
            "SELECT auth_id, certificate_bound FROM credentials WHERE tenant_id = ? AND device_id = ?"
            " AND kind = 'token' AND state IN ('inactive', 'active') ORDER BY id",
            (tenant_id, device_id),
        )
        return [(r[0], bool(r[1])) for r in rows]

    async def still_authorizes(self, credential_id: int, version: int, token: str) -> bool:
        """The credential a session was opened with is unchanged and usable, with its device, tenant
        and (for a certificate) CA, and `token` is still one of the device's usable tokens: what a
        publish made later on the session's behalf (its will) is checked against."""
        row = await self._db.read_one(
            """
            SELECT 1 FROM credentials c
              JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id
              JOIN tenants t ON t.id = c.tenant_id
              LEFT JOIN trusted_cas ca ON ca.id = c.ca_id
             WHERE c.id = ? AND c.updated_at = ? AND c.state IN ('inactive', 'active')
               AND d.enabled = 1 AND d.state != 'deleted' AND t.enabled = 1
               AND (c.ca_id IS NULL OR (ca.enabled = 1 AND ca.tenant_id = c.tenant_id))
               AND EXISTS (SELECT 1 FROM credentials k
                            WHERE k.tenant_id = c.tenant_id AND k.device_id = c.device_id AND k.kind = 'token'
                              AND k.auth_id = ? AND k.state IN ('inactive', 'active'))
            """,
            (credential_id, version, token),
        )
        return row is not None

    # -- management -----------------------------------------------------------------------------

    async def issue_token(
        self, tenant_id: str, device_id: str, token: str | None = None, *, node: str = ""
    ) -> Credential:
        """A new (inactive) bearer token; a device's first credential makes it `registered`. A chosen
        one must be strong (identifiers.BEARER_TOKEN_RULE)."""
        if token is None:
            token = generate_token()
        elif not is_valid_token(token):
            raise Invalid("invalid token: 1-256 characters, none of + # / . @, whitespace or controls", field="token")
        elif (weakness := bearer_token_problem(token)) is not None:
            raise Invalid(f"token too weak: {weakness}", field="token")
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            try:
                await tx.execute(
                    "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, secret, state,"
                    " created_at, updated_at) VALUES (?, ?, 'token', ?, NULL, 'inactive', ?, ?)",
                    (tenant_id, device_id, token, now, now),
                )
            except sqlite3.IntegrityError:
                raise Conflict("token already in use", field="token") from None
            await lifecycle.credential_added(tx, tenant_id, device_id, node=node)
        return await self.get(tenant_id, device_id, CredentialKind.TOKEN, token)

    async def set_password(
        self, tenant_id: str, device_id: str, auth_id: str, password_hash: str, *, node: str = ""
    ) -> Credential:
        """Creates the password credential, or replaces its hash (state unchanged). A device with a
        password is named in topics by its device id (`name_device`)."""
        if not is_valid_auth_id(auth_id):
            raise Invalid(f"invalid auth-id {auth_id!r}", field="authId")
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            async with tx.execute(
                "SELECT device_id FROM credentials WHERE tenant_id = ? AND kind = 'password' AND auth_id = ?",
                (tenant_id, auth_id),
            ) as cur:
                row = await cur.fetchone()
            if row is not None and row[0] != device_id:
                raise Conflict(f"auth-id {auth_id!r} belongs to another device", field="authId")
            async with tx.execute(
                "SELECT 1 FROM service_accounts WHERE tenant_id = ? AND id = ?", (tenant_id, auth_id)
            ) as cur:
                if await cur.fetchone() is not None:
                    raise Conflict(f"auth-id {auth_id!r} is a service account's username", field="authId")
            if row is None:
                await name_device(tx, tenant_id, device_id, now)
                await tx.execute(
                    "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, secret, state,"
                    " created_at, updated_at) VALUES (?, ?, 'password', ?, ?, 'inactive', ?, ?)",
                    (tenant_id, device_id, auth_id, password_hash, now, now),
                )
                await lifecycle.credential_added(tx, tenant_id, device_id, node=node)
            else:
                await tx.execute(
                    "UPDATE credentials SET secret = ?, updated_at = ?"
                    " WHERE tenant_id = ? AND kind = 'password' AND auth_id = ?",
                    (password_hash, now, tenant_id, auth_id),
                )
        return await self.get(tenant_id, device_id, CredentialKind.PASSWORD, auth_id)

    async def get(self, tenant_id: str, device_id: str, kind: CredentialKind, auth_id: str) -> Credential:
        conn = self._db.reader
        await require_device(conn, tenant_id, device_id)
        async with conn.execute(
            "SELECT * FROM credentials WHERE tenant_id = ? AND device_id = ? AND kind = ? AND auth_id = ?",
            (tenant_id, device_id, kind.value, auth_id),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"{kind.value} credential not found", field=_field(kind))
        return _credential(row)

    async def list(self, tenant_id: str, device_id: str, kind: CredentialKind | None = None) -> list[Credential]:
        conn = self._db.reader
        await require_device(conn, tenant_id, device_id)
        sql = "SELECT * FROM credentials WHERE tenant_id = ? AND device_id = ?"
        args: tuple[str, ...] = (tenant_id, device_id)
        if kind is not None:
            sql += " AND kind = ?"
            args = (*args, kind.value)
        async with conn.execute(sql + " ORDER BY id", args) as cur:
            return [_credential(r) for r in await cur.fetchall()]

    async def set_state(
        self, tenant_id: str, device_id: str, kind: CredentialKind, auth_id: str, state: CredentialState
    ) -> Credential:
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            async with tx.execute(
                "SELECT state FROM credentials WHERE tenant_id = ? AND device_id = ? AND kind = ? AND auth_id = ?",
                (tenant_id, device_id, kind.value, auth_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise NotFound(f"{kind.value} credential not found", field=_field(kind))
            current = CredentialState(row[0])
            if state != current:
                if state not in ALLOWED_TRANSITIONS[current]:
                    raise Conflict(f"cannot move a {current.value} credential to {state.value}", field="state")
                await tx.execute(
                    "UPDATE credentials SET state = ?, updated_at = ? WHERE tenant_id = ? AND kind = ? AND auth_id = ?",
                    (state.value, now_ms(), tenant_id, kind.value, auth_id),
                )
        return await self.get(tenant_id, device_id, kind, auth_id)

    async def delete(
        self, tenant_id: str, device_id: str, kind: CredentialKind, auth_id: str, *, node: str = ""
    ) -> None:
        """The device's last credential gone makes it `enrolled` again."""
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            cur = await tx.execute(
                "DELETE FROM credentials WHERE tenant_id = ? AND device_id = ? AND kind = ? AND auth_id = ?",
                (tenant_id, device_id, kind.value, auth_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"{kind.value} credential not found", field=_field(kind))
            await lifecycle.credential_removed(tx, tenant_id, device_id, node=node)


async def name_device(tx: aiosqlite.Connection, tenant_id: str, device_id: str, now: int) -> None:
    """Gives the device the bound token = its device id (what names a password or certificate device in
    kp1 topics), unless it has it. Raises Conflict when another device of the tenant holds that token."""
    async with tx.execute(
        "SELECT device_id FROM credentials WHERE tenant_id = ? AND kind = 'token' AND auth_id = ?",
        (tenant_id, device_id),
    ) as cur:
        holder = await cur.fetchone()
    if holder is None:
        await tx.execute(
            "INSERT INTO credentials (tenant_id, device_id, kind, auth_id, state, certificate_bound,"
            " created_at, updated_at) VALUES (?, ?, 'token', ?, 'active', 1, ?, ?)",
            (tenant_id, device_id, device_id, now, now),
        )
    elif holder[0] != device_id:
        raise Conflict(
            f"device id {device_id!r} is another device's endpoint token in this tenant: it cannot name this"
            " device in topics (delete that token, or use another device id)",
            field="id",
        )


def _field(kind: CredentialKind) -> str:
    return {"token": "token", "password": "authId", "x509": "fingerprint"}[kind.value]
