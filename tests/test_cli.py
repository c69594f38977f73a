"""The CLI drives a running gateway through its API, with the admin token from the data directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from gateway.runtime import Gateway

from .conftest import mqtt


async def cli(gateway: Gateway, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Runs `mqtt-gateway ARGS`; commands that talk to the gateway get its --data-dir."""
    local = args[0] == "pki"
    cmd = [sys.executable, "-m", "gateway", *args, *([] if local else ["--data-dir", str(gateway.settings.data_dir)])]
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


async def test_pki_and_ca_commands(gateway: Gateway, tmp_path: object) -> None:
    from pathlib import Path

    from .x509_client import tls_connack_files

    pki_dir = Path(str(tmp_path)) / "pki"
    assert (await cli(gateway, "tenant", "create", "acme")).returncode == 0
    r = await cli(gateway, "pki", "create-ca", str(pki_dir), "--cn", "Acme Devices CA")
    assert r.returncode == 0 and (pki_dir / "ca.pem").exists()
    assert oct((pki_dir / "ca.key").stat().st_mode & 0o777) == "0o600"
    again = await cli(gateway, "pki", "create-ca", str(pki_dir))
    assert again.returncode == 1 and "not overwriting" in again.stderr
    r = await cli(
        gateway, "ca", "add", "acme", str(pki_dir / "ca.pem"), "--auto-provision", "--app-version", "kv1", "--json"
    )
    assert r.returncode == 0, r.stderr
    ca_id = json.loads(r.stdout)["id"]
    r = await cli(gateway, "pki", "issue", str(pki_dir), "kettle-42")
    assert r.returncode == 0 and (pki_dir / "kettle-42.pem").exists()
    r = await cli(gateway, "ca", "check", "acme", str(pki_dir / "kettle-42.pem"))
    assert r.returncode == 0 and json.loads(r.stdout)["decision"] == "provisioned"
    assert await tls_connack_files(gateway, pki_dir / "kettle-42.pem", pki_dir / "kettle-42.key") == b"\x20\x02\x00\x00"
    r = await cli(gateway, "ca", "list", "acme", "--json")
    assert [c["id"] for c in json.loads(r.stdout)] == [ca_id]
    assert (await cli(gateway, "ca", "remove", "acme", ca_id)).returncode == 0
    r = await cli(gateway, "ca", "check", "acme", str(pki_dir / "kettle-42.pem"))
    assert r.returncode == 3 and json.loads(r.stdout)["reason"] == "unknown_ca"
    r = await cli(gateway, "pki", "issue", str(pki_dir), "../escape")
    assert r.returncode == 2


async def test_service_account_create_prints_the_credentials(gateway: Gateway) -> None:
    await cli(gateway, "tenant", "create", "acme")
    r = await cli(gateway, "service-account", "create", "acme", "analytics")
    assert r.returncode == 0
    account = json.loads(r.stdout)
    assert account["username"] == "analytics@acme" and account["password"]
    async with mqtt(gateway, account["username"], account["password"]) as svc:
        await svc.subscribe("$gateway/events/acme/#")
