"""Connection status: live sessions per node, last connect/disconnect facts, a bounded log per device.

`record_connect` and `record_disconnect` are on every CONNECT and disconnect: one statement each,
with the bookkeeping done by triggers (see migrations/0001_initial.sql).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .database import Database
from .devices import require_device
from .models import ConnectionLogEntry, ConnectionStatus, from_ms, from_ms_or_none, now_ms
from .recent import first_id_since

_OPEN_SESSION = """
INSERT OR REPLACE INTO live_sessions
    (session_key, tenant_id, device_id, credential_id, node, client_id, remote_address, connected_at)
SELECT ?, c.tenant_id, c.device_id, c.id, ?, ?, ?, ?
  FROM credentials c
  JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id
  JOIN tenants t ON t.id = c.tenant_id
 WHERE c.id = ? AND c.updated_at = ? AND c.state IN ('inactive', 'active')
   AND d.enabled = 1 AND d.state != 'deleted' AND t.enabled = 1
RETURNING session_key
"""


@dataclass(frozen=True)
class Presence:
    """A device's row in the dashboard's table."""

    sessions: int
    last_seen: datetime | None
    """Its last connect or disconnect."""


@dataclass(frozen=True)
class ConnectionActivity:
    """Connects and disconnects (by reason) since a time, counted from the connection log."""

    tenant_id: str
    event: str
    reason: str | None
    count: int


class ConnectionStore:
    def __init__(self, db: Database, *, log_limit: int = 100) -> None:
        self._db = db
        self._log_limit = log_limit

    async def configure(self) -> None:
        await self._db.write(
            "INSERT OR REPLACE INTO registry_settings (key, value) VALUES ('connection_log_limit', ?)",
            (self._log_limit,),
        )

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
        credential_version: int,
        connected_at: int | None = None,
    ) -> bool:
        """Records a session about to get CONNACK 0, re-checking its credential, device and tenant in
        the same statement. False: the credential changed (a new password, a state change), or it,
        the device or the tenant was revoked or deleted since it was verified: the caller refuses.
        `connected_at` (ms, default now) names this connection to `record_disconnect`."""
        del tenant_id, device_id  # taken from the credential row itself, so they cannot disagree
        at = now_ms() if connected_at is None else connected_at
        written = await self._db.write(
            _OPEN_SESSION, (session_key, node, client_id, remote_address, at, credential_id, credential_version)
        )
        return len(written) == 1

    async def record_disconnect(
        self, *, session_key: str, reason: str, detail: str | None = None, connected_at: int | None = None
    ) -> None:
        """With `connected_at`, only that connection's row: a late end of a connection that was taken
        over must not close the one that took its session key."""
        await self._db.write(
            "UPDATE live_sessions SET closed_at = ?, close_reason = ?, close_detail = ?"
            " WHERE session_key = ? AND closed_at IS NULL AND (? IS NULL OR connected_at = ?) RETURNING session_key",
            (now_ms(), reason, detail, session_key, connected_at, connected_at),
        )

    async def recover_node(self, node: str, *, reason: str = "gateway_restart") -> int:
        """After a crash, this node holds no session: close every live row it left behind."""
        closed = await self._db.write(
            "UPDATE live_sessions SET closed_at = ?, close_reason = ? WHERE node = ? AND closed_at IS NULL"
            " RETURNING session_key",
            (now_ms(), reason, node),
        )
        return len(closed)

    async def connected_devices(
        self, tenant_id: str, *, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, int, str, datetime]]:
        """The rendezvous view: (device id, live sessions, node, connected since) of the tenant's
        connected devices, by id, a page at a time (index live_sessions_device)."""
        rows = await self._db.read_all(
            "SELECT device_id, count(*) AS sessions, max(node) AS node, min(connected_at) AS since"
            " FROM live_sessions WHERE tenant_id = ? AND device_id > ?"
            " GROUP BY device_id ORDER BY device_id LIMIT ?",
            (tenant_id, after or "", limit),
        )
        return [(r["device_id"], r["sessions"], r["node"], from_ms(r["since"])) for r in rows]

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

    async def connected_counts(self, tenant_id: str | None = None) -> dict[str, int]:
        """tenant -> devices connected now (one tenant, or every tenant with any)."""
        select = "SELECT tenant_id, count(DISTINCT device_id) AS n FROM live_sessions WHERE closed_at IS NULL"
        if tenant_id is None:  # every live row, once
            rows = await self._db.read_all(f"{select} GROUP BY tenant_id")
        else:  # the tenant's rows only (live_sessions_device)
            rows = await self._db.read_all(f"{select} AND tenant_id = ? GROUP BY tenant_id", (tenant_id,))
        return {r["tenant_id"]: int(r["n"]) for r in rows}

    async def presence(self, tenant_id: str, device_ids: Sequence[str]) -> dict[str, Presence]:
        """Live sessions and last seen of a page of devices, in one read."""
        rows = await self._db.read_all(
            "SELECT j.value AS id,"
            " (SELECT count(*) FROM live_sessions s WHERE s.tenant_id = ? AND s.device_id = j.value"
            "  AND s.closed_at IS NULL) AS sessions,"
            " max(coalesce(c.last_connected_at, 0), coalesce(c.last_disconnected_at, 0)) AS seen"
            " FROM json_each(?) j"
            " LEFT JOIN connection_status c ON c.tenant_id = ? AND c.device_id = j.value",
            (tenant_id, json.dumps(list(device_ids)), tenant_id),
        )
        return {r["id"]: Presence(int(r["sessions"]), from_ms(r["seen"]) if r["seen"] else None) for r in rows}

    async def activity_since(self, since_ms: int, tenant_id: str | None = None) -> list[ConnectionActivity]:
        """Connects and disconnects by reason since `since_ms` (of one tenant, or of all): reads only
        the log rows of that window (see registry/recent.py)."""
        first = await first_id_since(self._db, "connection_log", since_ms)
        rows = await self._db.read_all(
            "SELECT tenant_id, event, reason, count(*) AS n FROM connection_log"
            " WHERE id >= ? AND at >= ? AND (? IS NULL OR tenant_id = ?)"
            " GROUP BY tenant_id, event, reason ORDER BY tenant_id, event, n DESC",
            (first, since_ms, tenant_id, tenant_id),
        )
        return [ConnectionActivity(r["tenant_id"], r["event"], r["reason"], int(r["n"])) for r in rows]
