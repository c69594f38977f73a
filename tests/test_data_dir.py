"""The data directory: private to its owner whatever the umask, and served by one gateway at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.node.datadir import DataDirInUse
from gateway.node.runtime import Gateway

from .conftest import admin_http, connection, make_device, served_gateway, served_ports, spawn_gateway, test_settings
from .wire import RawClient, connect_packet

CONNACK_OK = b"\x20\x02\x00\x00"
PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"
PRIVATE_FILES = ("registry.sqlite3", "registry.sqlite3-wal", "registry.sqlite3-shm", "gateway.lock")


def _modes(data_dir: Path, names: tuple[str, ...] = PRIVATE_FILES) -> dict[str, str]:
    """The data directory's mode and these files' modes (or "missing")."""
    paths = {".": data_dir} | {name: data_dir / name for name in names}
    return {name: oct(stat.S_IMODE(p.stat().st_mode)) if p.exists() else "missing" for name, p in paths.items()}


PRIVATE = {".": "0o700"} | dict.fromkeys(PRIVATE_FILES, "0o600")
REGISTRY_FILES = PRIVATE_FILES[:3]


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    """This process's umask, which spawned gateways inherit."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def _connected_device(api: httpx.AsyncClient, port: int) -> RawClient:
    token = await make_device(api)
    raw = await RawClient.open(port)
    await raw.send(connect_packet("c", token))
    assert await raw.read_packet() == CONNACK_OK
    return raw


async def _still_connected(api: httpx.AsyncClient, raw: RawClient) -> None:
    """The session answers a ping, and the registry still has it connected, never `gateway_restart`."""
    await raw.send(PINGREQ)
    assert await raw.read_packet() == PINGRESP
    status = await connection(api, "acme", "dev-1")
    assert status["connected"] is True and status["sessions"] == 1
    assert [e["reason"] for e in status["log"] if e["reason"] == "gateway_restart"] == []


async def test_registry_and_data_dir_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _umask(0o000):  # the most permissive umask there is
        proc = spawn_gateway(data_dir, "private-node")
    try:
        ports = await served_ports(data_dir, proc)
        async with admin_http(data_dir, ports) as api:
            raw = await _connected_device(api, ports["mqtt"])  # writes: the WAL is in use
            assert _modes(data_dir) == PRIVATE
            await raw.close()
    finally:
        _stop(proc)


async def test_files_left_loose_by_an_older_version_are_tightened_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    gw = Gateway(test_settings(data_dir))
    await gw.start()
    await gw.stop()
    # What an older version left behind under umask 022: a 0755 directory and 0644 registry files,
    # with -wal and -shm present (they outlive a crash; here an open connection keeps them).
    data_dir.chmod(0o755)
    (data_dir / "registry.sqlite3").chmod(0o644)
    with _umask(0o022):
        older = sqlite3.connect(data_dir / "registry.sqlite3")
        older.execute("SELECT count(*) FROM sqlite_master").fetchall()
    try:
        assert _modes(data_dir, REGISTRY_FILES) == {".": "0o755"} | dict.fromkeys(REGISTRY_FILES, "0o644")
        gw = Gateway(test_settings(data_dir))
        caplog.set_level(logging.WARNING)
        await gw.start()
        try:
            assert _modes(data_dir) == PRIVATE
            assert [r.getMessage() for r in caplog.records if "tightened" in r.getMessage()] == [
                f"data directory {data_dir} was mode 0755, open to other users; tightened to 0700",
                "registry: registry.sqlite3, registry.sqlite3-wal, registry.sqlite3-shm tightened to mode 0600 "
                "(was open to other users)",
            ]
        finally:
            await gw.stop()
    finally:
        older.close()


async def test_a_second_serve_on_the_data_dir_refuses_and_leaves_the_first_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = spawn_gateway(data_dir, "node-a")
    second = None
    try:
        ports = await served_ports(data_dir, first)
        ports_json = (data_dir / "ports.json").read_bytes()
        async with admin_http(data_dir, ports) as api:
            raw = await _connected_device(api, ports["mqtt"])
            second = spawn_gateway(data_dir, "node-a")  # same node id: it would close the first's sessions
            assert await asyncio.to_thread(second.wait, 20) == 2
            assert second.stderr is not None
            assert second.stderr.read().decode().splitlines() == [
                f"mqtt-gateway: data directory {data_dir} is in use by another gateway (pid {first.pid}); "
                "stop it or use --data-dir"
            ]
            await _still_connected(api, raw)
            assert (data_dir / "ports.json").read_bytes() == ports_json
            await raw.close()
    finally:
        _stop(second)
        _stop(first)


async def test_after_kill_9_a_new_serve_takes_the_data_dir_and_closes_stale_sessions(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with served_gateway(data_dir, "node-a") as crashed:
        async with crashed.api() as api:
            raw = await _connected_device(api, crashed.ports["mqtt"])
        await crashed.kill_9()
        await raw.close()
    async with served_gateway(data_dir, "node-a") as restarted, restarted.api() as api:
        status = await connection(api, "acme", "dev-1")
        assert status["connected"] is False and status["log"][0]["reason"] == "gateway_restart"
        assert (data_dir / "gateway.lock").read_text().strip() == str(restarted.proc.pid)


async def test_a_second_in_process_gateway_on_the_data_dir_is_refused(gateway: Gateway, api: httpx.AsyncClient) -> None:
    raw = await _connected_device(api, gateway.ports["mqtt"])
    second = Gateway(test_settings(gateway.settings.data_dir))
    with pytest.raises(DataDirInUse, match=rf"is in use by another gateway \(pid {os.getpid()}\)$"):
        await second.start()
    await second.stop()  # stopping the refused one releases nothing of the first's
    await _still_connected(api, raw)
    third = Gateway(test_settings(gateway.settings.data_dir))
    with pytest.raises(DataDirInUse):
        await third.start()
    await raw.close()


async def test_a_failed_start_and_a_stop_give_the_data_dir_back(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        failed = Gateway(test_settings(tmp_path, api_port=busy.getsockname()[1]))
        with pytest.raises(OSError, match="cannot bind the API"):
            await failed.start()
    finally:
        busy.close()
    for _ in range(2):
        gw = Gateway(test_settings(tmp_path))
        await gw.start()
        await gw.stop()
