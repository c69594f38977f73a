"""Issue 17 point 11: a CSV import's passwords are never written in clear, in any file (the
registry, its -wal and -shm, logs, the audit trail, job errors): they are cut out of the stored
upload, held in memory until hashed, and a restart forgets them (those rows fail, saying so)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.services.imports import parse

from .conftest import admin_http, mqtt, ok, restarted_gateway, served_gateway, served_ports, spawn_gateway, wait_until

HEADER = "deviceId,group,appVersion,credential,attr.model\n"


def _secret(i: int) -> str:
    return f"Plaintext-Secret-{i:05d}-zq"


def occurrences(data_dir: Path, needles: list[str]) -> dict[str, int]:
    """How often each needle is in any file under the data directory (the registry, -wal, -shm...)."""
    found: dict[str, int] = {}
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for needle in needles:
                count = content.count(needle.encode())
                if count:
                    found[f"{path.name}: {needle}"] = count
    return found


async def _finished(api: httpx.AsyncClient, path: str, timeout: float = 60) -> dict[str, Any]:
    async def done() -> bool:
        return (await ok(api.get(path)))["state"] not in ("queued", "running")

    await wait_until(done, timeout=timeout)
    return await ok(api.get(path, params={"errors": 10_000}))  # type: ignore[no-any-return]


async def test_no_password_of_an_import_is_in_any_file(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
    passwords = [_secret(i) for i in range(3)]
    csv = HEADER + (
        f"p0,,v1,password:p0-login:{passwords[0]},m\n"
        f'p1,,v1,"password:p1-login:{passwords[1]}",m\n'
        f"bad id,,v1,password:bad-login:{passwords[2]},m\n"  # refused: its password is not kept either
        f"p3,,v1,password:p3-login:{passwords[2]},m,one field too many\n"
        f"p4,,password:p4-login:{passwords[2]},,m\n"  # shifted into appVersion: its row error quotes that
        "t0,,v1,token:generate,m\n"
    )
    accepted = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)
    job = await _finished(api, f"/v1/tenants/acme/device-imports/{accepted['jobId']}")
    assert (job["state"], job["created"], job["failed"]) == ("succeeded", 3, 3)
    assert "invalid appVersion 'password:p4-login:'" in [e["message"] for e in job["errors"]]
    async with mqtt(gateway, "p0-login@acme", passwords[0]), mqtt(gateway, "p1-login@acme", passwords[1]):
        pass  # the hashes were made from the passwords given
    # before any checkpoint: the -wal holds every page written since the last one
    assert (gateway.settings.data_dir / "registry.sqlite3-wal").exists()
    assert occurrences(gateway.settings.data_dir, passwords) == {}
    audit = (await ok(api.get("/v1/audit", params={"limit": 1000})))["entries"]
    logged = caplog.text + repr(audit) + repr(job)
    assert [p for p in passwords if p in logged] == []
    assert job["passwordRows"] == 3  # p3's row is of the wrong width: no password is read from it


@pytest.mark.timeout(180)  # two gateways and ~300 argon2 runs, on 2 busy cores
async def test_a_restart_forgets_the_passwords_not_yet_hashed_and_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    rows = 240
    passwords = [_secret(i) for i in range(rows)]
    csv = "deviceId,credential\n" + "".join(f"d{i:04d},password:login-{i:04d}:{passwords[i]}\n" for i in range(rows))
    async with served_gateway(data_dir, "node-a") as served, served.api() as api:
        await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
        accepted = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)
        path = f"/v1/tenants/acme/device-imports/{accepted['jobId']}"

        async def started() -> bool:
            return (await ok(api.get(path)))["processed"] > 0

        await wait_until(started, timeout=30)
        await served.kill_9()
    assert occurrences(data_dir, passwords) == {}  # what the killed process left on disk
    async with (
        restarted_gateway(data_dir, "node-a") as gateway,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.ports['api']}",
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
        ) as api,
    ):
        job = await _finished(api, path)
        assert job["state"] == "succeeded" and 0 < job["created"] < rows
        assert job["created"] + job["failed"] == rows
        assert {e["message"] for e in job["errors"]} == {
            "its password was held in memory only and the gateway restarted before it was hashed: import this row again"
        }
        first = job["created"] - 1
        async with mqtt(gateway, f"login-{first:04d}@acme", passwords[first]):
            pass  # a row hashed before the crash works
        # the same file again creates the rows that failed, and only them
        again = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)
        redo = await _finished(api, f"/v1/tenants/acme/device-imports/{again['jobId']}", timeout=120)
        assert (redo["created"], redo["unchanged"], redo["failed"]) == (job["failed"], job["created"], 0)
        assert occurrences(data_dir, passwords) == {}


@pytest.mark.gateway_settings(import_max_held_password_bytes=64 * 1024)
async def test_passwords_waiting_to_be_hashed_are_bounded(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)

    def csv(prefix: str, rows: int) -> bytes:
        lines = "".join(f"{prefix}{i},password:{prefix}{i}:{_secret(i)}\n" for i in range(rows))
        return ("deviceId,credential\n" + lines).encode()

    too_big = await api.post("/v1/tenants/acme/device-imports", content=csv("big", 1000))
    assert too_big.status_code == 413, too_big.text
    assert "import_max_held_password_bytes" in too_big.json()["message"]
    first = await ok(api.post("/v1/tenants/acme/device-imports", content=csv("a", 300)), 202)
    busy = await api.post("/v1/tenants/acme/device-imports", content=csv("b", 300))
    assert busy.status_code == 429, busy.text
    assert "waiting to be hashed" in busy.json()["message"] and busy.headers["Retry-After"]
    # a cancelled job gives its room back at once
    await ok(api.delete(f"/v1/tenants/acme/device-imports/{first['jobId']}"))
    await ok(api.post("/v1/tenants/acme/device-imports", content=csv("b", 300)), 202)
    assert len(await ok(api.get("/v1/tenants/acme/device-imports"))) == 2  # the refused one left no job


def test_the_stored_upload_keeps_every_row_and_its_line_but_no_password() -> None:
    """A restart re-reads the stored form: the same records on the same lines, so the job resumes
    at the right row and row errors name the file's lines."""
    data = "\ufeff" + (
        "deviceId,credential,attr.note\n"
        '\np0,password:p0:PW-zero,"a note\non two lines"\n'
        'p1,"password:p1:PW-one, with a comma\nand a line break",\n'  # two lines, one record
        "\n\n"
        "p2,token:tok-2,x\n"
        "p3,password:p3:PW-three,x,PW-split-into-a-fourth-field\n"  # the wrong width: blanked
        "p4, password:p4:PW-four ,\r\n"
        "p5,password:p5:,\n"
        "p6,password:p6:PW-six,last\n"
        "password:p7:PW-seven,,x"  # shifted into deviceId: refused, and its error quotes the cell
    )
    first = parse(data.encode(), 100)
    again = parse(first.stored, None)
    assert [line for line, _ in again.records] == [line for line, _ in first.records] == [3, 5, 9, 10, 11, 12, 13, 14]
    assert first.password_rows == again.password_rows == 5  # p3 is of the wrong width
    assert first.held == {3: "PW-zero", 5: "PW-one, with a comma\nand a line break", 11: "PW-four", 13: "PW-six"}
    assert b"PW-" not in first.stored and again.held == {}
    assert [fields for _, fields in again.records] == [
        ["p0", "password:p0:", "a note\non two lines"],
        ["p1", "password:p1:", ""],
        ["p2", "token:tok-2", "x"],
        ["-", "-", "-", "-"],
        ["p4", "password:p4:", ""],
        ["p5", "password:p5:", ""],
        ["p6", "password:p6:", "last"],
        ["password:p7:", "", "x"],
    ]


async def test_debug_logs_carry_no_secret(tmp_path: Path) -> None:
    """At log_level DEBUG the SQLite driver would log every statement's parameters: the upload,
    tokens. It stays at WARNING whatever the level."""
    data_dir = tmp_path / "data"
    proc = spawn_gateway(data_dir, "node-a", GATEWAY_LOG_LEVEL="DEBUG")
    assert proc.stderr is not None
    stderr = asyncio.create_task(asyncio.to_thread(proc.stderr.read))  # read from the start: a full pipe stalls it
    try:
        ports = await served_ports(data_dir, proc)
        async with admin_http(data_dir, ports) as api:
            await ok(api.post("/v1/tenants", json={"id": "acme"}), 201)
            csv = "deviceId,credential\nd1,password:d1:Debug-Plaintext-Pw\nd2,token:Debug-Plaintext-Token-0123456789\n"
            accepted = await ok(api.post("/v1/tenants/acme/device-imports", content=csv.encode()), 202)
            await _finished(api, f"/v1/tenants/acme/device-imports/{accepted['jobId']}")
            async with aiomqtt.Client("127.0.0.1", ports["mqtt"], username="Debug-Plaintext-Token-0123456789"):
                pass
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
    logged = (await stderr).decode()
    assert " DEBUG " in logged  # the level is on
    assert "Debug-Plaintext-Pw" not in logged and "Debug-Plaintext-Token-0123456789" not in logged
    assert occurrences(data_dir, ["Debug-Plaintext-Pw"]) == {}
