"""Connection status: live sessions per node, last connect/disconnect facts, a bounded log per device."""

from __future__ import annotations

from .database import Database
from .devices import require_device
from .models import ConnectionLogEntry, ConnectionStatus, from_ms, from_ms_or_none, now_ms


class ConnectionStore:
    def __init__(self, db: Database, *, log_limit: int = 100) -> None:
        self._db = db
        self._log_limit = log_limit

    async def record_connect(
        self,
        *,
        session_key: str,
        tenant_id: str,
        device_id: str,
        node: str,
        client_id: str,
        remote_address: str | None,
        credential_id: int,
    ) -> bool:
        """Records a session that got CONNACK 0, and marks the credential used (inactive -> active).

        Returns False when the device or credential vanished meanwhile (the caller closes the session).
        """
        now = now_ms()
        async with self._db.transaction() as tx:
            cur = await tx.execute(
                "UPDATE credentials SET last_used_at = ?,"
                " state = CASE state WHEN 'inactive' THEN 'active' ELSE state END"
                " WHERE id = ? AND state IN ('inactive', 'active')",
                (now, credential_id),
            )
            if cur.rowcount == 0:
                return False
            await tx.execute(
                "INSERT OR REPLACE INTO live_sessions (session_key, tenant_id, device_id, node, client_id,"
                " remote_address, connected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_key, tenant_id, device_id, node, client_id, remote_address, now),
            )
            await tx.execute(
                "INSERT INTO connection_status (tenant_id, device_id, last_connected_at, remote_address, node)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, device_id) DO UPDATE SET"
                " last_connected_at = excluded.last_connected_at,"
                " remote_address = excluded.remote_address, node = excluded.node",
                (tenant_id, device_id, now, remote_address, node),
            )
            await self._log(tx, tenant_id, device_id, now, "connected", None, None, client_id, remote_address, node)
        return True

    async def record_disconnect(self, *, session_key: str, reason: str, detail: str | None = None) -> None:
        now = now_ms()
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT * FROM live_sessions WHERE session_key = ?", (session_key,)) as cur:
                row = await cur.fetchone()
            if row is None:  # device deleted meanwhile (cascade), or never recorded
                return
            await tx.execute("DELETE FROM live_sessions WHERE session_key = ?", (session_key,))
            await tx.execute(
                "UPDATE connection_status SET last_disconnected_at = ? WHERE tenant_id = ? AND device_id = ?",
                (now, row["tenant_id"], row["device_id"]),
            )
            await self._log(
                tx,
                row["tenant_id"],
                row["device_id"],
                now,
                "disconnected",
                reason,
                detail,
                row["client_id"],
                row["remote_address"],
                row["node"],
            )

    async def recover_node(self, node: str, *, reason: str = "gateway_restart") -> int:
        """After a crash, this node holds no session: close every live row it left behind."""
        now = now_ms()
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT * FROM live_sessions WHERE node = ?", (node,)) as cur:
                rows = list(await cur.fetchall())
            for row in rows:
                await tx.execute(
                    "UPDATE connection_status SET last_disconnected_at = ? WHERE tenant_id = ? AND device_id = ?",
                    (now, row["tenant_id"], row["device_id"]),
                )
                await self._log(
                    tx,
                    row["tenant_id"],
                    row["device_id"],
                    now,
                    "disconnected",
                    reason,
                    None,
                    row["client_id"],
                    row["remote_address"],
                    node,
                )
            await tx.execute("DELETE FROM live_sessions WHERE node = ?", (node,))
        return len(rows)

    async def status(self, tenant_id: str, device_id: str, *, log_entries: int = 50) -> ConnectionStatus:
        conn = self._db.reader
        await require_device(conn, tenant_id, device_id)
        async with conn.execute(
            "SELECT count(*) FROM live_sessions WHERE tenant_id = ? AND device_id = ?", (tenant_id, device_id)
        ) as cur:
            row = await cur.fetchone()
        sessions = int(row[0]) if row else 0
        async with conn.execute(
            "SELECT * FROM connection_status WHERE tenant_id = ? AND device_id = ?", (tenant_id, device_id)
        ) as cur:
            status = await cur.fetchone()
        async with conn.execute(
            "SELECT * FROM connection_log WHERE tenant_id = ? AND device_id = ? ORDER BY id DESC LIMIT ?",
            (tenant_id, device_id, log_entries),
        ) as cur:
            log = [
                ConnectionLogEntry(
                    at=from_ms(r["at"]),
                    event=r["event"],
                    reason=r["reason"],
                    detail=r["detail"],
                    client_id=r["client_id"],
                    remote_address=r["remote_address"],
                    node=r["node"],
                )
                for r in await cur.fetchall()
            ]
        return ConnectionStatus(
            tenant_id=tenant_id,
            device_id=device_id,
            connected=sessions > 0,
            sessions=sessions,
            last_connected_at=from_ms_or_none(status["last_connected_at"]) if status else None,
            last_disconnected_at=from_ms_or_none(status["last_disconnected_at"]) if status else None,
            remote_address=status["remote_address"] if status else None,
            node=status["node"] if status else None,
            log=log,
        )

    async def _log(self, tx, tenant_id, device_id, at, event, reason, detail, client_id, remote, node) -> None:  # type: ignore[no-untyped-def]
        await tx.execute(
            "INSERT INTO connection_log (tenant_id, device_id, at, event, reason, detail, client_id,"
            " remote_address, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, device_id, at, event, reason, detail, client_id, remote, node),
        )
        # Bounded: keep the newest `log_limit` rows of this device.
        await tx.execute(
            "DELETE FROM connection_log WHERE tenant_id = ? AND device_id = ? AND id <= ("
            " SELECT id FROM connection_log WHERE tenant_id = ? AND device_id = ?"
            " ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (tenant_id, device_id, tenant_id, device_id, self._log_limit),
        )
