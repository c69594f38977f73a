"""11/CEP commands: invoked, delivered, answered or expired. Each change is one transaction, and the
ones that finish a command write its event (`command/succeeded|failed|expired`) in it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiosqlite

from .database import Database
from .devices import require_device
from .errors import Conflict, Invalid, LimitReached, NotFound
from .events import emit
from .models import Command, CommandState, from_ms, from_ms_or_none, now_ms

_OUTSTANDING = "state IN ('pending', 'delivered')"
MAX_ID = 2**31 - 1
"""Ids are 1/KP request-id sized: a device echoes them back in its results."""
MAX_ID_STEP = 1_000_000
"""How far above the last id an application's own id may jump (so ids are not used up at once)."""


def encode_json(value: Any, what: str) -> str:
    """Compact JSON text of a payload; NaN and Infinity are not JSON and are refused."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError:
        raise Invalid(f"{what} is not representable as JSON (NaN or Infinity)", field=what) from None


def _command(row: aiosqlite.Row) -> Command:
    return Command(
        tenant_id=row["tenant_id"],
        device_id=row["device_id"],
        type=row["type"],
        id=row["id"],
        payload=json.loads(row["payload"]),
        state=CommandState(row["state"]),
        status_code=row["status_code"],
        reason_phrase=row["reason_phrase"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
        origin=row["origin"],
        created_at=from_ms(row["created_at"]),
        deadline=from_ms(row["deadline"]),
        delivered_at=from_ms_or_none(row["delivered_at"]),
        completed_at=from_ms_or_none(row["completed_at"]),
    )


@dataclass(frozen=True, slots=True)
class ResultIn:
    """One element of a device's 11/CEP result request."""

    id: int
    status_code: int
    reason_phrase: str | None = None
    payload: Any = None


class ResultOutcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    """The same result again (a QoS 1 redelivery): nothing changes."""
    UNKNOWN = "unknown"
    FINISHED = "finished"
    """The command already ended otherwise (expired, or another result)."""


def succeeded(status_code: int) -> bool:
    return 200 <= status_code < 300


class CommandStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def invoke(
        self,
        tenant_id: str,
        device_id: str,
        command_type: str,
        payload: Any,
        *,
        timeout_ms: int,
        origin: str,
        max_outstanding: int,
        command_id: int | None = None,
    ) -> Command:
        """A new pending command. Its id is one more than the last id of the device and type, or
        `command_id`, which must be larger than every id used before (ids are never reused)."""
        body = encode_json(payload, "payload")
        now = now_ms()
        async with self._db.transaction() as tx:
            await require_device(tx, tenant_id, device_id)
            async with tx.execute(
                f"SELECT (SELECT COUNT(*) FROM commands WHERE tenant_id = ?1 AND device_id = ?2 AND {_OUTSTANDING}),"  # noqa: S608
                " (SELECT last_id FROM command_sequences WHERE tenant_id = ?1 AND device_id = ?2 AND type = ?3)",
                (tenant_id, device_id, command_type),
            ) as cur:
                row = await cur.fetchone()
            outstanding, last = (int(row[0]), int(row[1] or 0)) if row is not None else (0, 0)
            if outstanding >= max_outstanding:
                raise LimitReached(
                    f"device {device_id!r} has {outstanding} outstanding commands (the limit); retry later"
                )
            if command_id is not None and not last < command_id <= last + MAX_ID_STEP:
                raise Conflict(
                    f"command id {command_id} must be above the last id {last} of {command_type!r}"
                    f" and at most {MAX_ID_STEP:,} above it",
                    field="id",
                )
            new_id = command_id if command_id is not None else last + 1
            if new_id > MAX_ID:
                raise Conflict(f"the command ids of {command_type!r} on this device are used up", field="id")
            rows = await tx.execute_fetchall(
                "INSERT INTO commands (tenant_id, device_id, type, id, payload, state, origin, created_at, deadline)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) RETURNING *",
                (tenant_id, device_id, command_type, new_id, body, origin, now, now + timeout_ms),
            )
            await tx.execute(
                "INSERT INTO command_sequences (tenant_id, device_id, type, last_id) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, device_id, type) DO UPDATE SET last_id = excluded.last_id",
                (tenant_id, device_id, command_type, new_id),
            )
        return _command(next(iter(rows)))

    async def get(self, tenant_id: str, device_id: str, command_type: str, command_id: int) -> Command:
        row = await self._db.read_one(
            "SELECT * FROM commands WHERE tenant_id = ? AND device_id = ? AND type = ? AND id = ?",
            (tenant_id, device_id, command_type, command_id),
        )
        if row is None:
            raise NotFound(f"command {command_type}/{command_id} of device {device_id!r} not found", field="command")
        return _command(row)

    async def outstanding(self, tenant_id: str, device_id: str, command_type: str | None = None) -> list[Command]:
        """The device's commands that have neither a result nor expired, by type and id."""
        sql = f"SELECT * FROM commands WHERE tenant_id = ? AND device_id = ? AND {_OUTSTANDING} AND deadline > ?"  # noqa: S608
        args: tuple[object, ...] = (tenant_id, device_id, now_ms())
        if command_type is not None:
            sql += " AND type = ?"
            args = (*args, command_type)
        rows = await self._db.read_all(sql + " ORDER BY type, id", args)
        return [_command(r) for r in rows]

    async def mark_delivered(self, tenant_id: str, device_id: str, commands: list[tuple[str, int]]) -> None:
        """Sent to the device: pending -> delivered (a command sent again stays delivered)."""
        if not commands:
            return
        pairs = ", ".join("(?, ?)" for _ in commands)
        await self._db.write(  # one statement, one trip to the writer
            "UPDATE commands SET state = 'delivered', delivered_at = ? WHERE tenant_id = ? AND device_id = ?"  # noqa: S608
            f" AND state = 'pending' AND (type, id) IN (VALUES {pairs}) RETURNING id",
            (now_ms(), tenant_id, device_id, *(v for pair in commands for v in pair)),
        )

    async def record_results(
        self, tenant_id: str, device_id: str, command_type: str, results: list[ResultIn], *, node: str
    ) -> list[tuple[ResultIn, ResultOutcome, Command | None]]:
        """The device's results, in one transaction: each outstanding command it names succeeds (2xx) or
        fails, with its event. A result for an unknown or already finished command changes nothing."""
        now = now_ms()
        outcomes: list[tuple[ResultIn, ResultOutcome, Command | None]] = []
        async with self._db.transaction() as tx:
            for result in results:
                key = (tenant_id, device_id, command_type, result.id)
                state = CommandState.SUCCEEDED if succeeded(result.status_code) else CommandState.FAILED
                rows = await tx.execute_fetchall(  # the common case first: an outstanding command
                    "UPDATE commands SET state = ?, status_code = ?, reason_phrase = ?, result = ?, completed_at = ?"  # noqa: S608
                    f" WHERE tenant_id = ? AND device_id = ? AND type = ? AND id = ? AND {_OUTSTANDING} RETURNING *",
                    (
                        state.value,
                        result.status_code,
                        result.reason_phrase,
                        encode_json(result.payload, "payload"),
                        now,
                        *key,
                    ),
                )
                if rows:
                    done = _command(next(iter(rows)))
                    await _emit_finished(tx, done, node)
                    outcomes.append((result, ResultOutcome.RECORDED, done))
                    continue
                async with tx.execute(
                    "SELECT * FROM commands WHERE tenant_id = ? AND device_id = ? AND type = ? AND id = ?", key
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    outcomes.append((result, ResultOutcome.UNKNOWN, None))
                    continue
                current = _command(row)
                same = current.status_code == result.status_code and encode_json(
                    current.result, "payload"
                ) == encode_json(result.payload, "payload")  # JSON, not Python, equality: 1 is not true
                outcomes.append((result, ResultOutcome.DUPLICATE if same else ResultOutcome.FINISHED, current))
        return outcomes

    async def expire_due(self, *, node: str) -> list[Command]:
        """Outstanding commands past their deadline expire, each with its event."""
        now = now_ms()
        async with self._db.transaction() as tx:
            rows = await tx.execute_fetchall(
                f"UPDATE commands SET state = 'expired', completed_at = ? WHERE {_OUTSTANDING} AND deadline <= ?"  # noqa: S608
                " RETURNING *",
                (now, now),
            )
            expired = [_command(r) for r in rows]
            for command in expired:
                await _emit_finished(tx, command, node)
        return expired

    async def next_deadline(self) -> int | None:
        """The earliest deadline of an outstanding command (ms), on the commands_due index."""
        row = await self._db.read_one(f"SELECT MIN(deadline) AS d FROM commands WHERE {_OUTSTANDING}")  # noqa: S608
        return None if row is None or row["d"] is None else int(row["d"])

    async def prune(self, max_age_ms: int) -> int:
        """Finished commands older than the event retention go (their ids are not reused)."""
        gone = await self._db.write(
            "DELETE FROM commands WHERE completed_at IS NOT NULL AND completed_at < ? RETURNING id",
            (now_ms() - max_age_ms,),
        )
        return len(gone)


async def _emit_finished(tx: aiosqlite.Connection, command: Command, node: str) -> None:
    await emit(
        tx,
        command.tenant_id,
        f"command/{command.state.value}",
        node,
        endpointId=command.device_id,
        commandType=command.type,
        commandId=command.id,
        statusCode=command.status_code,
        reasonPhrase=command.reason_phrase,
        payload=command.result,
        origin=command.origin,
    )
