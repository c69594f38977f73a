"""Registry: migrations, transactions that roll back whole, typed results."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from registry import Conflict, NotFound, Registry
from registry.database import _migrations


async def test_fresh_file_gets_every_migration(tmp_path: Path) -> None:
    reg = await Registry(tmp_path / "r.sqlite3").open()
    try:
        assert await reg.db.schema_version() == _migrations()[-1][0]
        async with reg.db.reader.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"
        async with reg.db.reader.execute("PRAGMA foreign_keys") as cur:
            assert (await cur.fetchone())[0] == 1
    finally:
        await reg.close()


async def test_reopening_keeps_rows(tmp_path: Path) -> None:
    reg = await Registry(tmp_path / "r.sqlite3").open()
    await reg.tenants.create("acme")
    await reg.devices.create("acme", "d1", attributes={"k": "v"})
    await reg.close()
    reg = await Registry(tmp_path / "r.sqlite3").open()
    try:
        assert (await reg.devices.get("acme", "d1")).attributes == {"k": "v"}
    finally:
        await reg.close()


async def test_older_file_is_upgraded_without_losing_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file made by an older binary gets the newer migrations at start-up, rows intact."""
    path = tmp_path / "r.sqlite3"
    reg = await Registry(path).open()
    await reg.tenants.create("acme")
    await reg.devices.create("acme", "d1")
    await reg.close()
    shipped = _migrations()
    newer = [*shipped, (shipped[-1][0] + 1, "ALTER TABLE tenants ADD COLUMN note TEXT DEFAULT 'upgraded';")]
    monkeypatch.setattr("registry.database._migrations", lambda: newer)
    reg = await Registry(path).open()
    try:
        assert await reg.db.schema_version() == newer[-1][0]
        assert (await reg.devices.get("acme", "d1")).id == "d1"
        async with reg.db.reader.execute("SELECT id, note FROM tenants") as cur:
            assert [tuple(r) for r in await cur.fetchall()] == [("acme", "upgraded")]
    finally:
        await reg.close()


async def test_failed_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.sqlite3"
    reg = await Registry(path).open()
    await reg.tenants.create("acme")
    await reg.close()
    shipped = _migrations()
    broken = (shipped[-1][0] + 1, "ALTER TABLE tenants ADD COLUMN x TEXT; SELECT * FROM no_such_table;")
    monkeypatch.setattr("registry.database._migrations", lambda: [*shipped, broken])
    with pytest.raises(sqlite3.OperationalError):
        await Registry(path).open()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == shipped[-1][0]
        assert [r[1] for r in conn.execute("PRAGMA table_info(tenants)")].count("x") == 0
        assert conn.execute("SELECT id FROM tenants").fetchall() == [("acme",)]


async def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    reg = await Registry(path).open()
    await reg.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with pytest.raises(RuntimeError, match="newer than this gateway knows"):
        await Registry(path).open()


async def test_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    reg = await Registry(tmp_path / "r.sqlite3").open()
    try:
        await reg.tenants.create("acme")
        with pytest.raises(RuntimeError):
            async with reg.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO devices (tenant_id, id, created_at, updated_at) VALUES ('acme', 'x', 0, 0)"
                )
                raise RuntimeError("boom")
        with pytest.raises(NotFound):
            await reg.devices.get("acme", "x")
        with pytest.raises(Conflict):
            await reg.tenants.create("acme")
    finally:
        await reg.close()


async def test_token_lookup_uses_an_index(tmp_path: Path) -> None:
    reg = await Registry(tmp_path / "r.sqlite3").open()
    try:
        for sql in (
            "SELECT * FROM credentials WHERE kind = 'token' AND auth_id = 'x'",
            "SELECT * FROM credentials WHERE tenant_id = 't' AND kind = 'password' AND auth_id = 'x'",
        ):
            async with reg.db.reader.execute("EXPLAIN QUERY PLAN " + sql) as cur:
                plan = " ".join(str(r[3]) for r in await cur.fetchall())
            assert "USING INDEX" in plan and "SCAN" not in plan, plan
    finally:
        await reg.close()


async def test_a_device_app_version_move_never_overwrites_an_operators_change(tmp_path: Path) -> None:
    """set_app_version is a compare-and-set: a 10/EPMP move decided from an old read is refused."""
    reg = await Registry(tmp_path / "r.sqlite3").open()
    try:
        await reg.tenants.create("acme")
        await reg.devices.create("acme", "d1", app_version="v1")
        await reg.devices.update("acme", "d1", app_version="v3")  # the operator, meanwhile
        with pytest.raises(Conflict):
            await reg.devices.set_app_version("acme", "d1", "v2", expected="v1", node="n")
        assert (await reg.devices.get("acme", "d1")).app_version == "v3"
        assert await reg.devices.set_app_version("acme", "d1", "v4", expected="v3", node="n") == "v3"
    finally:
        await reg.close()


def test_generated_tokens_never_look_like_an_option() -> None:
    from registry.identifiers import generate_token, is_valid_token

    tokens = [generate_token() for _ in range(5000)]
    assert all(t[0].isalnum() and len(t) == 32 and is_valid_token(t) for t in tokens)
    assert len(set(tokens)) == 5000


async def test_a_transaction_cancelled_as_it_begins_leaves_none_open(tmp_path: Path) -> None:
    """Found by issue 17's audit work: a task cancelled while BEGIN ran left the writer in a transaction
    (33 of 200 times), so every later transaction failed and every later write stayed uncommitted.
    The gateway cancels its workers at stop, and then still writes (the counted refusals)."""
    registry = await Registry(tmp_path / "r.sqlite3").open()
    left_open = 0
    try:
        for _ in range(200):

            async def one() -> None:
                async with registry.db.transaction() as conn:
                    await conn.execute("SELECT 1")

            task = asyncio.create_task(one())
            await asyncio.sleep(0)  # it takes the lock and sends BEGIN
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            async with registry.db.transaction() as conn:  # "cannot start a transaction within a transaction"?
                left_open += conn.in_transaction is False
        await registry.tenants.create("after")
    finally:
        await registry.close()
    reopened = await Registry(tmp_path / "r.sqlite3").open()
    try:
        assert left_open == 0 and [t.id for t in await reopened.tenants.list()] == ["after"]
    finally:
        await reopened.close()
