"""The CLI drives a running gateway through its API, with the admin token from the data directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

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


async def test_groups_policies_and_a_filtered_paged_device_list(gateway: Gateway, tmp_path: Path) -> None:
    """Issue 10: `group create|list|rename|delete|move`, `group policy set|get`, `device list` filters and pages."""
    await cli(gateway, "tenant", "create", "acme")
    assert (await cli(gateway, "group", "create", "acme", "lab", "--description", "bench")).returncode == 0
    for i in range(5):
        await cli(gateway, "device", "create", "acme", f"d{i}")
    r = await cli(gateway, "group", "move", "acme", "lab", "d1", "d2", "d3")
    assert r.returncode == 0 and "moved 3 device(s) into lab" in r.stdout
    policy = tmp_path / "policy.json"
    policy.write_text('{"interval": 5}')
    r = await cli(gateway, "group", "policy", "set", "acme", "lab", str(policy))
    assert r.returncode == 0 and len(json.loads(r.stdout)["configId"]) == 64
    r = await cli(gateway, "group", "policy", "get", "acme", "lab")
    assert json.loads(r.stdout)["config"] == {"interval": 5}
    r = await cli(gateway, "group", "list", "acme", "--json")
    assert {g["id"]: g["devices"] for g in json.loads(r.stdout)} == {"default": 2, "lab": 3}
    r = await cli(gateway, "device", "list", "acme", "--group", "lab", "--limit", "2", "--json")
    page = json.loads(r.stdout)
    assert [d["id"] for d in page["devices"]] == ["d1", "d2"] and page["next"] == "d2"
    r = await cli(gateway, "device", "list", "acme", "--group", "lab", "--limit", "2", "--after", "d2", "--json")
    assert [d["id"] for d in json.loads(r.stdout)["devices"]] == ["d3"]
    r = await cli(gateway, "device", "list", "acme", "--limit", "2", "--all", "--json")
    assert [d["id"] for line in r.stdout.splitlines() for d in json.loads(line)] == [f"d{i}" for i in range(5)]
    r = await cli(gateway, "device", "list", "acme", "--limit", "2")
    assert r.returncode == 0 and "next: d1" in r.stdout
    assert (await cli(gateway, "group", "rename", "acme", "lab", "bench")).returncode == 0
    r = await cli(gateway, "group", "delete", "acme", "bench")
    assert r.returncode == 1 and "409" in r.stderr
    assert (await cli(gateway, "group", "delete", "acme", "bench", "--move-to", "default")).returncode == 0


async def test_policy_files_follow_the_apis_json_rules(gateway: Gateway, tmp_path: Path) -> None:
    """A duplicate key used to be stored silently (the last one won), NaN to end in a traceback."""
    await cli(gateway, "tenant", "create", "acme")
    for name, text in [("dup.json", '{"a": 1, "a": 2}'), ("nan.json", '{"a": NaN}'), ("sur.json", '{"a": "\\ud800"}')]:
        (tmp_path / name).write_text(text)
        r = await cli(gateway, "group", "policy", "set", "acme", "default", str(tmp_path / name))
        assert r.returncode == 1 and "Traceback" not in r.stderr and name in r.stderr, (name, r.stderr)
    r = await cli(gateway, "group", "policy", "get", "acme", "default")
    assert json.loads(r.stdout)["config"] == {}


async def test_device_import_reports_and_writes_tokens_privately(gateway: Gateway, tmp_path: Path) -> None:
    await cli(gateway, "tenant", "create", "acme")
    template = await cli(gateway, "device", "import", "acme", "--template")
    assert template.returncode == 0 and template.stdout.startswith("deviceId,group,appVersion,credential")
    csv = tmp_path / "fleet.csv"
    csv.write_text("deviceId,credential\nd1,token:generate\nd2,token:generate\nbad id,\n")
    out = tmp_path / "tokens.csv"
    r = await cli(gateway, "device", "import", "acme", str(csv), "--tokens-out", str(out))
    assert r.returncode == 1, r.stderr  # one row failed: the job succeeded, the import did not fully
    assert "3 rows, 2 created, 0 unchanged, 1 failed" in r.stdout and "row 4: bad id: invalid deviceId" in r.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == ["deviceId", "d1", "d2"]
    again = await cli(gateway, "device", "import", "acme", str(csv), "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["unchanged"] == 2


async def test_an_unwritable_tokens_out_stops_before_anything_is_uploaded(gateway: Gateway, tmp_path: Path) -> None:
    """The tokens used to be downloaded (once) before the file was opened: a bad path lost them for good."""
    await cli(gateway, "tenant", "create", "acme")
    csv = tmp_path / "fleet.csv"
    csv.write_text("deviceId,credential\nd1,token:generate\n")
    r = await cli(gateway, "device", "import", "acme", str(csv), "--tokens-out", str(tmp_path / "no" / "dir.csv"))
    assert r.returncode == 2 and "cannot write --tokens-out" in r.stderr and "Traceback" not in r.stderr
    jobs = await cli(gateway, "device", "list", "acme", "--json")
    assert json.loads(jobs.stdout)["devices"] == []  # nothing was imported
    loose = tmp_path / "loose.csv"
    loose.write_text("old")
    loose.chmod(0o644)
    r = await cli(gateway, "device", "import", "acme", str(csv), "--tokens-out", str(loose))
    assert r.returncode == 0 and loose.stat().st_mode & 0o777 == 0o600 and "d1," in loose.read_text()


async def test_endpoint_filters_create_list_match(gateway: Gateway, tmp_path: Path) -> None:
    """Issue 10 point 6: `filter create|list|match` (and delete)."""
    await cli(gateway, "tenant", "create", "acme")
    for i in range(3):
        await cli(gateway, "device", "create", "acme", f"d{i}", "--app-version", "v2" if i else "v1")
    r = await cli(gateway, "filter", "create", "acme", "new", '{"appVersion": {"$in": ["v2"]}}', "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert (created["state"], created["matching"]) == ("active", 2)  # it waited for the first scan
    query = tmp_path / "q.json"
    query.write_text('{"appVersion": "v1", "appVersion": "v2"}')
    r = await cli(gateway, "filter", "create", "acme", "dup", f"@{query}")
    assert r.returncode == 1 and "duplicate" in r.stderr and "Traceback" not in r.stderr
    r = await cli(gateway, "filter", "create", "acme", "bad", '{"colour": "red"}')
    assert r.returncode == 1 and "/query/colour" in r.stderr
    r = await cli(gateway, "filter", "list", "acme")
    assert r.returncode == 0 and "new" in r.stdout and "active" in r.stdout
    r = await cli(gateway, "filter", "match", "acme", "new", "--limit", "1", "--all", "--json")
    assert [e["endpointId"] for line in r.stdout.splitlines() for e in json.loads(line)] == ["d1", "d2"]
    r = await cli(gateway, "filter", "match", "acme", "new", "--limit", "1")
    assert r.returncode == 0 and "d1" in r.stdout and "next: d1" in r.stdout
    assert (await cli(gateway, "filter", "delete", "acme", "new")).returncode == 0
    r = await cli(gateway, "filter", "match", "acme", "new")
    assert r.returncode == 1 and "404" in r.stderr
