"""The SQLite file: one writer connection (transactions serialized by a lock), one reader, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


def _migrations() -> list[tuple[int, str]]:
    """(version, sql) for every `NNNN_name.sql` shipped in registry/migrations, in order."""
    found = []
    for entry in resources.files("registry.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _make_private(path: Path) -> None:
    """The registry holds endpoint tokens and password hashes: 0600 whatever the umask.

    Created 0600 before SQLite opens it, because SQLite's unix VFS gives the -wal and -shm files it
    makes later the main file's mode. Files left looser by older versions are tightened here."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    tightened = []
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if stat.S_IMODE(file.stat().st_mode) & 0o077:
                file.chmod(0o600)
                tightened.append(file.name)
        except FileNotFoundError:
            continue
        except OSError as exc:  # another owner's file: say so, the registry still opens
            log.warning("registry: %s is open to other users and cannot be tightened: %s", file, exc)
    if tightened:
        log.warning("registry: %s tightened to mode 0600 (was open to other users)", ", ".join(tightened))


class Database:
    """Owns the aiosqlite connections. WAL lets the reader see committed data while a write runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self.observe: Callable[[str, float], None] | None = None
        """Told (kind, seconds) of every call: `read`, `write` or `transaction`, waiting for the
        write lock included (the gateway feeds its registry latency histogram with it)."""

    async def open(self) -> None:
        await asyncio.to_thread(_make_private, self.path)
        self._writer = await self._connect()
        try:
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await self._migrate(self._writer)
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly what we say.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        migrations = _migrations()
        newest = migrations[-1][0] if migrations else 0
        if current > newest:
            raise RuntimeError(
                f"registry {self.path} has schema version {current}, newer than this gateway knows "
                f"({newest}); refusing to touch it"
            )
        for version, sql in migrations:
            if version <= current:
                continue
            log.info("registry: applying migration %04d", version)
            # One transaction per migration: a failure leaves the file at the previous version.
            try:
                await conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        async with self.reader.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("registry is not open")
        return self._reader

    async def write(self, sql: str, args: tuple[object, ...] = ()) -> list[aiosqlite.Row]:
        """One statement, atomic on its own (with its triggers), in one trip to the writer thread.

        Give it a RETURNING clause to learn what it changed. Taken under the write lock so it
        never lands inside another caller's open transaction."""
        if self._writer is None:
            raise RuntimeError("registry is not open")
        start = time.perf_counter()
        async with self._write_lock:
            rows = list(await self._writer.execute_fetchall(sql, args))
        self._observed("write", start)
        return rows

    async def read_one(self, sql: str, args: tuple[object, ...] = ()) -> aiosqlite.Row | None:
        """One row (or None) in one trip to the reader thread: the CONNECT path reads this way."""
        start = time.perf_counter()
        rows = await self.reader.execute_fetchall(sql, args)
        self._observed("read", start)
        return next(iter(rows), None)

    async def read_all(self, sql: str, args: tuple[object, ...] = ()) -> list[aiosqlite.Row]:
        start = time.perf_counter()
        rows = list(await self.reader.execute_fetchall(sql, args))
        self._observed("read", start)
        return rows

    def _observed(self, kind: str, start: float) -> None:
        if self.observe is not None:
            self.observe(kind, time.perf_counter() - start)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time; rolled back on any exception, so nothing is half-written."""
        if self._writer is None:
            raise RuntimeError("registry is not open")
        start = time.perf_counter()
        async with self._write_lock:
            conn = self._writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                # Cancelled while the writer thread ran BEGIN: it began all the same, and left open it
                # would fail every later transaction and hold every later write uncommitted.
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            else:
                await conn.execute("COMMIT")
        self._observed("transaction", start)
