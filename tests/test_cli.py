"""The CLI drives a running gateway through its API, with the admin token from the data directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from gateway.runtime import Gateway

from .conftest import mqtt


async def cli(gateway: Gateway, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", *args, "--data-dir", str(gateway.settings.data_dir)]
    return await asyncio.to_thread(subprocess.run, cmd, input=stdin, capture_output=True, text=True, timeout=60)


async def test_quickstart_commands(gateway: Gateway) -> None:
    assert (await cli(gateway, "tenant", "create", "acme")).returncode == 0
    r = await cli(
        gateway, "device", "create", "acme", "kettle-1", "--app-version", "kv1", "--attr", "model=k2", "--json"
    )
    assert r.returncode == 0 and json.loads(r.stdout)["attributes"] == {"model": "k2"}
    r = await cli(gateway, "token", "issue", "acme", "kettle-1")
    token = r.stdout.strip()
    assert r.returncode == 0 and len(token) >= 22 and "\n" not in token
    async with mqtt(gateway, token, tls=True, client_id="k"):
        r = await cli(gateway, "device", "status", "acme", "kettle-1")
        assert r.returncode == 0 and json.loads(r.stdout)["connected"] is True
    r = await cli(gateway, "token", "set-state", "acme", token, "suspended", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "suspended"


async def test_password_from_stdin(gateway: Gateway) -> None:
    await cli(gateway, "tenant", "create", "acme")
    await cli(gateway, "device", "create", "acme", "d1")
    r = await cli(gateway, "password", "set", "acme", "d1", "sensor", "--json", stdin="pa ss\n")
    assert r.returncode == 0 and json.loads(r.stdout)["username"] == "sensor@acme"
    async with mqtt(gateway, "sensor@acme", "pa ss"):
        pass


async def test_failures_exit_non_zero_with_a_message(gateway: Gateway) -> None:
    r = await cli(gateway, "device", "create", "nope", "d1")
    assert r.returncode == 1 and "404" in r.stderr and "nope" in r.stderr
    await cli(gateway, "tenant", "create", "acme")
    r = await cli(gateway, "tenant", "create", "acme")
    assert r.returncode == 1 and "409" in r.stderr
    r = await cli(gateway, "device", "create", "acme", "d1", "--attr", "novalue")
    assert r.returncode == 2


def test_no_gateway_in_data_dir(tmp_path: object) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "tenant", "list", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "no running gateway" in r.stderr
