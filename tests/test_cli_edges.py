"""Issue 17, a new user's rough edges in the CLI: common options on either side of the command, `-h`,
`device get`'s columns, a missing CSV named, CA keys kept out of Python packages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import httpx
import pytest

from gateway.node.runtime import Gateway

from .conftest import make_device, mqtt, next_json, ok
from .pki_helpers import device_tls, make_ca, make_device_cert, trust

ROOT = Path(__file__).resolve().parent.parent


async def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`mqtt-gateway ARGS` exactly as given (piped), without GATEWAY_* from the test's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean | (env or {}),
        cwd=cwd,
    )


def tenants(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 0, r.stderr
    return [t["id"] for t in json.loads(r.stdout)]


async def test_common_options_work_before_and_after_the_command(gateway: Gateway, tmp_path: Path) -> None:
    """`mqtt-gateway --data-dir X tenant list` and `tenant list --url ...` used to be usage errors."""
    data_dir, url, admin = (
        str(gateway.settings.data_dir),
        f"http://127.0.0.1:{gateway.ports['api']}",
        gateway.admin_token,
    )
    nowhere = str(tmp_path / "no-gateway-here")
    r = await run("--data-dir", data_dir, "tenant", "create", "acme")
    assert r.returncode == 0, r.stderr
    assert tenants(await run("--data-dir", data_dir, "tenant", "list", "--json")) == ["acme"]
    assert tenants(await run("tenant", "list", "--json", "--data-dir", data_dir)) == ["acme"]
    # the command's --data-dir wins over the one before it
    assert tenants(await run("--data-dir", nowhere, "tenant", "list", "--data-dir", data_dir, "--json")) == ["acme"]
    r = await run("--data-dir", data_dir, "tenant", "list", "--data-dir", nowhere)
    assert r.returncode == 1 and "no running gateway found in" in r.stderr and nowhere in r.stderr
    # --url and --token after the command, from a directory without a gateway; after beats before and env
    assert tenants(await run("tenant", "list", "--url", url, "--token", admin, "--json", cwd=tmp_path)) == ["acme"]
    r = await run("--url", "http://127.0.0.1:1", "--token", "wrong", "tenant", "list", "--url", url, "--token", admin)
    assert r.returncode == 0, r.stderr
    env = {"GATEWAY_URL": "http://127.0.0.1:1", "GATEWAY_TOKEN": "wrong"}
    assert tenants(await run("tenant", "list", "--json", "--url", url, "--token", admin, env=env, cwd=tmp_path)) == [
        "acme"
    ]
    r = await run("tenant", "list", "--url", url, "--token", "wrong-token", cwd=tmp_path)
    assert r.returncode == 1 and "the admin token from --token was refused" in r.stderr and admin not in r.stderr
    r = await run("tenant", "list", "--url", url, cwd=tmp_path)  # a URL after the command needs a token too
    assert r.returncode == 1 and "--url needs a token too" in r.stderr
    # a nested group's command, and a top-level one
    r = await run("device", "tombstone", "list", "acme", "--url", url, "--token", admin, "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    r = await run("metrics", "--url", url, "--token", admin, "--json", cwd=tmp_path)
    assert r.returncode == 0 and "connectsAccepted" in json.loads(r.stdout), r.stderr
    # `token issue --token` is the device's token: the admin's goes before the command there
    await run("--data-dir", data_dir, "device", "create", "acme", "d1")
    chosen = "chosen-device-token-0123456789"
    r = await run("--url", url, "--token", admin, "token", "issue", "acme", "d1", "--token", chosen)
    assert r.returncode == 0 and r.stdout.strip() == chosen, r.stderr
    r = await run("token", "issue", "acme", "d1", "--url", url, "--token", admin, cwd=tmp_path)
    assert r.returncode == 2 and "No such option: --url" in r.stderr


async def test_the_data_dir_before_the_command_reaches_serve_and_check_config(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    r = await run("--data-dir", str(before), "check-config")
    assert r.returncode == 0 and f'data_dir = "{before}"' in r.stdout, r.stderr
    r = await run("--data-dir", str(before), "check-config", "--data-dir", str(after))
    assert r.returncode == 0 and f'data_dir = "{after}"' in r.stdout, r.stderr
    r = await run("check-config", "--url", "http://127.0.0.1:1")  # serve and check-config talk to no API
    assert r.returncode == 2 and "No such option: --url" in r.stderr


@pytest.mark.parametrize(
    "args",
    [["-h"], ["tenant", "-h"], ["tenant", "list", "-h"], ["device", "tombstone", "list", "-h"], ["serve", "-h"]],
)
async def test_h_is_help_everywhere(args: list[str]) -> None:
    r = await run(*args)
    assert r.returncode == 0 and r.stdout.startswith("Usage: mqtt-gateway"), r.stderr
    assert "-h, --help" in r.stdout


async def test_help_lists_the_options_that_may_follow_a_command() -> None:
    r = await run("tenant", "list", "--help")
    assert r.returncode == 0 and "--data-dir DIR" in r.stdout and "--url URL" in r.stdout
    assert "--token TOKEN" in r.stdout
    r = await run("--help")
    assert "--data-dir DIR" in r.stdout


async def test_device_get_shows_auto_provisioning_and_the_policy(
    gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Its help promised the policy; the README promises `auto-provisioned`: neither was a column."""
    token = await make_device(api, "acme", "kettle-1", app_version="v1")
    ca = make_ca(tmp_path, "Acme Devices CA")
    await ok(trust(api, "acme", ca, autoProvisioningEnabled=True, appVersion="v1"), 201)
    cert = make_device_cert(tmp_path, ca, "kettle-42")
    async with aiomqtt.Client("localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, cert)):
        pass
    data_dir = str(gateway.settings.data_dir)

    async def row(device: str) -> dict[str, str]:
        r = await run("device", "get", "acme", device, "--data-dir", data_dir)
        assert r.returncode == 0, r.stderr
        (header,) = [line for line in r.stdout.splitlines() if line.startswith("┃")]  # rich's table, piped
        names = [cell.strip() for cell in header.strip("┃").split("┃")]
        rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
        (values,) = [[cell.strip() for cell in line.strip("│").split("│")] for line in rows]
        return dict(zip(names, values, strict=True))

    got = await row("kettle-42")  # every group has a policy ({} at first) that a new device has not applied
    assert (got["autoProvisioned"], got["policy"], got["state"]) == ("True", "pending", "registered")
    got = await row("kettle-1")
    assert (got["autoProvisioned"], got["policy"]) == ("False", "pending")
    policy = await ok(api.put("/v1/tenants/acme/groups/default/policy", json={"interval": 30}))
    assert (await row("kettle-1"))["policy"] == "pending"
    cmx = f"kp1/v1/cmx/{token}"
    async with mqtt(gateway, token) as device:
        await device.subscribe(f"{cmx}/applied/json/#", qos=1)
        failed = {"configId": policy["configId"], "statusCode": 500, "reasonPhrase": "flash full"}
        await device.publish(f"{cmx}/applied/json/1", json.dumps(failed).encode(), qos=1)
        assert (await next_json(device))[0] == f"{cmx}/applied/json/1/status"
        assert (await row("kettle-1"))["policy"] == "failed (500 flash full)"
        await device.publish(f"{cmx}/applied/json/2", json.dumps({"configId": policy["configId"]}).encode(), qos=1)
        assert (await next_json(device))[0] == f"{cmx}/applied/json/2/status"
    got = await row("kettle-1")
    assert (got["policy"], got["state"]) == ("applied", "provisioned")
    r = await run("device", "get", "acme", "kettle-1", "--json", "--data-dir", data_dir)
    assert "policy" not in json.loads(r.stdout)  # the API's JSON as it is


async def test_a_missing_csv_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.csv"
    r = await run("device", "import", "acme", str(missing), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"mqtt-gateway: cannot read the CSV file {missing}: No such file or directory"
    unreadable = tmp_path / "locked.csv"
    unreadable.write_text("deviceId\nd1\n")
    unreadable.chmod(0)
    r = await run("device", "import", "acme", str(unreadable), "--data-dir", str(tmp_path))
    if os.geteuid() != 0:  # root reads it anyway: then it is the missing gateway that stops it
        assert r.returncode == 2 and "Permission denied" in r.stderr and str(unreadable) in r.stderr
    else:
        assert r.returncode == 1 and "no running gateway" in r.stderr
    r = await run("device", "import", "acme", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "give the CSV file to import" in r.stderr


async def test_pki_refuses_to_write_keys_into_a_python_package(tmp_path: Path) -> None:
    """The README's walkthrough used to run `pki create-ca ./pki`: the CA key landed in the project's
    own `pki` package, next to the code (and into a wheel built from it)."""
    r = await run("pki", "create-ca", "./pki", cwd=ROOT)
    assert r.returncode == 1 and "inside the Python package" in r.stderr and "Traceback" not in r.stderr
    assert not (ROOT / "pki" / "ca.key").exists() and not (ROOT / "pki" / "ca.pem").exists()
    package = tmp_path / "site-packages" / "somepkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    r = await run("pki", "create-ca", str(package / "keys" / "ca"))
    assert r.returncode == 1 and f"inside the Python package {package}" in r.stderr
    assert not (package / "keys").exists()
    outside = tmp_path / "acme-pki"
    r = await run("pki", "create-ca", str(outside))
    assert r.returncode == 0 and (outside / "ca.key").exists(), r.stderr
    (outside / "__init__.py").write_text("")  # the directory became a package: no device key goes there
    r = await run("pki", "issue", str(outside), "kettle-42")
    assert r.returncode == 1 and "inside the Python package" in r.stderr
    assert not (outside / "kettle-42.key").exists()


async def test_a_data_directory_inside_a_python_package_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Its registry holds tokens and password hashes, the directory the admin token and TLS keys."""
    (tmp_path / "__init__.py").write_text("")
    data_dir = tmp_path / "gateway-data"
    ports = ["--mqtt-port", "0", "--mqtts-port", "0", "--api-port", "0"]
    r = await run("serve", "--data-dir", str(data_dir), *ports)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"mqtt-gateway: refusing to write the data directory {data_dir} inside the Python package {tmp_path}:"
        " it would ship with the code; choose a directory outside the source tree"
    )
    assert not data_dir.exists()
    r = await run("check-config", "--data-dir", str(data_dir))
    assert r.returncode == 1 and f"is inside the Python package '{tmp_path}'" in r.stderr
