"""The CLI drives a running gateway through its API, with the admin token from the data directory."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from gateway.node.runtime import Gateway

from .conftest import mqtt


async def cli(
    gateway: Gateway, *args: str, stdin: str = "", env: dict[str, str] | None = None, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `mqtt-gateway ARGS` (piped: stdout is not a terminal); commands that talk to the gateway
    get its --data-dir (or `data_dir`). GATEWAY_URL and GATEWAY_TOKEN only from `env`."""
    local = args[0] == "pki"
    where = ["--data-dir", str(data_dir or gateway.settings.data_dir)]
    cmd = [sys.executable, "-m", "gateway", *args, *([] if local else where)]
    clean = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_URL", "GATEWAY_TOKEN")}
    run_env = clean | (env or {})
    return await asyncio.to_thread(
        subprocess.run, cmd, input=stdin, capture_output=True, text=True, timeout=60, env=run_env
    )


def api_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.ports['api']}"


def one_line_error(r: subprocess.CompletedProcess[str], *secrets: str) -> str:
    """The failure is one line on stderr, no traceback, no secret in it."""
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("mqtt-gateway: "), r.stderr
    assert not any(secret in r.stderr + r.stdout for secret in secrets)
    return r.stderr


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
        gateway,
        "ca",
        "add",
        "acme",
        str(pki_dir / "ca.pem"),
        "--key",
        str(pki_dir / "ca.key"),
        "--auto-provision",
        "--app-version",
        "kv1",
        "--json",
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
    r = await cli(gateway, "ca", "update", "acme", ca_id, "--no-auto-provision", "--rate-per-minute", "5", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["provisioningRatePerMinute"] == 5, r.stderr
    r = await cli(gateway, "ca", "get", "acme", ca_id, "--json")
    assert json.loads(r.stdout)["autoProvisioningEnabled"] is False
    r = await cli(gateway, "certificate", "list", "acme", "kettle-42", "--json")
    (cert,) = json.loads(r.stdout)
    r = await cli(gateway, "certificate", "set-state", "acme", "kettle-42", cert["fingerprint"], "suspended", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "suspended"
    assert (await cli(gateway, "device", "delete", "acme", "kettle-42", "--yes")).returncode == 0
    r = await cli(gateway, "ca", "tombstone", "list", "acme", "--json")
    assert [t["fingerprint"] for t in json.loads(r.stdout)] == [cert["fingerprint"]]
    assert (await cli(gateway, "ca", "tombstone", "delete", "acme", cert["fingerprint"])).returncode == 0
    assert (await cli(gateway, "ca", "remove", "acme", ca_id)).returncode == 0  # the old name of `ca delete`
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
    r = await cli(gateway, "import-job", "list", "acme", "--json")
    jobs = json.loads(r.stdout)
    assert [j["tokens"] for j in jobs] == ["none", "downloaded"]  # newest first
    r = await cli(gateway, "import-job", "get", "acme", jobs[1]["jobId"])
    assert r.returncode == 0 and "row 4: bad id: invalid deviceId" in r.stdout
    r = await cli(gateway, "import-job", "tokens", "acme", jobs[1]["jobId"], "--tokens-out", str(tmp_path / "t2.csv"))
    assert "410" in r.stderr and r.returncode == 1 and not (tmp_path / "t2.csv").exists()
    r = await cli(gateway, "import-job", "cancel", "acme", jobs[0]["jobId"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "succeeded"  # finished: nothing to stop


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
    r = await cli(gateway, "filter", "update", "acme", "new", '{"appVersion": "v1"}', "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["matching"] == 1, r.stderr
    r = await cli(gateway, "filter", "update", "acme", "new", '{"appVersion": "v2"}')
    r = await cli(gateway, "filter", "get", "acme", "new", "--json")
    assert json.loads(r.stdout)["query"] == {"appVersion": "v2"}
    r = await cli(gateway, "filter", "match", "acme", "new", "--limit", "1", "--all", "--json")
    assert [e["endpointId"] for line in r.stdout.splitlines() for e in json.loads(line)] == ["d1", "d2"]
    r = await cli(gateway, "filter", "match", "acme", "new", "--limit", "1")
    assert r.returncode == 0 and "d1" in r.stdout and "next: d1" in r.stdout
    assert (await cli(gateway, "filter", "delete", "acme", "new")).returncode == 0
    r = await cli(gateway, "filter", "match", "acme", "new")
    assert r.returncode == 1 and "404" in r.stderr


async def test_a_remote_gateway_by_url_and_token_option_over_env_over_data_dir(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Issue 11 point 6: --url/--token (env GATEWAY_URL/GATEWAY_TOKEN) manage a gateway whose data
    directory is not here; the option beats the env, the env beats the data directory."""
    elsewhere, admin = tmp_path / "not-here", gateway.admin_token
    r = await cli(gateway, "--url", api_url(gateway), "--token", admin, "tenant", "create", "acme", data_dir=elsewhere)
    assert r.returncode == 0, r.stderr
    env = {"GATEWAY_URL": api_url(gateway) + "/", "GATEWAY_TOKEN": admin}
    r = await cli(gateway, "tenant", "list", "--json", env=env, data_dir=elsewhere)
    assert r.returncode == 0 and [t["id"] for t in json.loads(r.stdout)] == ["acme"]
    r = await cli(gateway, "--token", admin, "tenant", "get", "acme", env={**env, "GATEWAY_TOKEN": "wrong"})
    assert r.returncode == 0, r.stderr
    r = await cli(gateway, "--token", "wrong-token", "tenant", "get", "acme", env=env)
    assert "401" in one_line_error(r, admin) and "the admin token from --token was refused" in r.stderr
    r = await cli(gateway, "tenant", "get", "acme", env={"GATEWAY_TOKEN": "wrong-token"})  # address: data dir
    assert "from GATEWAY_TOKEN was refused" in one_line_error(r, admin)
    r = await cli(gateway, "--url", "http://127.0.0.1:1", "tenant", "list")  # URL given, token not: not the data dir's
    assert "needs a token too" in one_line_error(r, admin)
    r = await cli(gateway, "--url", "http://127.0.0.1:1", "tenant", "list", env={"GATEWAY_URL": api_url(gateway)})
    assert r.returncode == 1  # the option's URL, not the env's


async def test_remote_errors_are_one_clear_line(gateway: Gateway) -> None:
    admin = gateway.admin_token
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    r = await cli(gateway, "--url", f"http://127.0.0.1:{closed}", "--token", admin, "tenant", "list")
    assert "cannot reach the gateway API at http://127.0.0.1:" in one_line_error(r, admin)
    for bad in ["127.0.0.1:8080", "ftp://127.0.0.1/", "http://", "http://h:port/", "http://h/?q=1"]:
        r = await cli(gateway, "--url", bad, "--token", admin, "tenant", "list")
        assert "--url must be http(s)://HOST[:PORT][/PATH]" in one_line_error(r, admin), bad
    r = await cli(gateway, "--url", "http://user:s3cret@127.0.0.1:1/", "--token", admin, "tenant", "list")
    one_line_error(r, admin, "s3cret")
    r = await cli(gateway, "tenant", "list", env={"GATEWAY_TOKEN": "two words\nand a line"})
    assert "characters a header cannot carry" in one_line_error(r, "two words")
    mqtt_port = gateway.ports["mqtt"]  # something that is not an HTTP server
    r = await cli(gateway, "--url", f"http://127.0.0.1:{mqtt_port}", "--token", admin, "tenant", "list")
    one_line_error(r, admin)
    r = await cli(gateway, "--url", api_url(gateway) + "/v1", "--token", admin, "tenant", "list")
    assert "404" in one_line_error(r, admin)


async def test_deletes_of_tenants_and_devices_need_yes_when_not_on_a_terminal(gateway: Gateway) -> None:
    await cli(gateway, "tenant", "create", "acme")
    await cli(gateway, "device", "create", "acme", "d1")
    r = await cli(gateway, "device", "delete", "acme", "d1")
    assert r.returncode == 2 and "pass --yes" in one_line_error(r)
    r = await cli(gateway, "tenant", "delete", "acme", stdin="y\n")  # a pipe is not a terminal: no prompt
    assert r.returncode == 2 and "pass --yes" in r.stderr
    assert (await cli(gateway, "device", "get", "acme", "d1")).returncode == 0
    assert (await cli(gateway, "device", "delete", "acme", "d1", "--yes")).returncode == 0
    assert (await cli(gateway, "tenant", "delete", "acme", "-y")).returncode == 0
    r = await cli(gateway, "tenant", "get", "acme")
    assert "404" in one_line_error(r)


async def test_delete_asks_on_a_terminal(gateway: Gateway) -> None:
    await cli(gateway, "tenant", "create", "acme")
    for answer, code in [("n", 1), ("y", 0)]:
        primary, secondary = os.openpty()
        try:
            os.write(primary, f"{answer}\n".encode())
            cmd = [
                sys.executable,
                "-m",
                "gateway",
                "tenant",
                "delete",
                "acme",
                "--data-dir",
                str(gateway.settings.data_dir),
            ]
            r = await asyncio.to_thread(
                subprocess.run, cmd, stdin=secondary, capture_output=True, text=True, timeout=60
            )
        finally:
            os.close(primary)
            os.close(secondary)
        assert r.returncode == code and "Delete tenant 'acme'" in r.stdout, (answer, r.stdout, r.stderr)
    r = await cli(gateway, "tenant", "list", "--json")
    assert json.loads(r.stdout) == []


async def test_piped_tables_keep_long_ids_and_tokens_whole(gateway: Gateway) -> None:
    """A table on a pipe is as wide as its longest row: nothing wraps, nothing is cut with an ellipsis."""
    long_id = "d" * 64 + "-" + "x" * 63
    long_token = "T" * 200 + "~!$%&'()*,;=?" + "t" * 43
    assert (len(long_id), len(long_token)) == (128, 256)
    await cli(gateway, "tenant", "create", "acme")
    r = await cli(gateway, "device", "create", "acme", long_id, "--attr", "note=[/]", "--attr", "x=[red]y")
    assert r.returncode == 0, r.stderr
    r = await cli(gateway, "token", "issue", "acme", long_id, "--token", long_token)
    assert r.returncode == 0 and r.stdout.strip() == long_token, r.stderr
    listed = await cli(gateway, "device", "list", "acme")
    row = [line for line in listed.stdout.splitlines() if long_id in line]
    assert len(row) == 1 and '"note": "[/]"' in row[0] and "[red]y" in row[0] and "…" not in listed.stdout
    tokens = await cli(gateway, "token", "list", "acme", long_id)
    assert len([line for line in tokens.stdout.splitlines() if long_token in line and long_id in line]) == 1
    r = await cli(gateway, "token", "get", "acme", long_token, "--json")  # `?`, `%`, `&` stay in one path segment
    assert r.returncode == 0 and json.loads(r.stdout)["device"] == long_id


async def test_ids_stay_one_path_segment(gateway: Gateway) -> None:
    await cli(gateway, "tenant", "create", "acme")
    r = await cli(gateway, "device", "get", "acme", "..")  # not GET /v1/tenants/acme
    assert "404" in one_line_error(r) and "device" in r.stderr
    r = await cli(gateway, "device", "get", "acme", "d1/connection")
    assert r.returncode == 2 and "not an id" in one_line_error(r)
    r = await cli(gateway, "token", "set-state", "acme", "a?state=x", "revoked")
    assert "404" in one_line_error(r)
    r = await cli(gateway, "device", "get", "acme", "")
    assert r.returncode == 2


async def test_every_api_resource_has_a_command(gateway: Gateway, tmp_path: Path) -> None:
    """Issue 11 point 6: device update, token get/delete, password list/set-state/delete, service
    accounts, tombstones, metadata, metrics, audit, commands, data, import jobs, CA update."""

    async def ok(*args: str, stdin: str = "") -> object:
        r = await cli(gateway, *args, "--json", stdin=stdin)
        assert r.returncode == 0, (args, r.stderr)
        return json.loads(r.stdout)

    async def done(*args: str) -> None:
        r = await cli(gateway, *args)
        assert r.returncode == 0 and r.stdout == "", (args, r.stderr)

    assert (await ok("tenant", "create", "acme", "--max-devices", "10"))["maxDevices"] == 10  # type: ignore[index]
    updated = await ok("tenant", "update", "acme", "--max-devices", "none", "--forward-extension", "meta")
    assert updated["maxDevices"] is None and updated["forwardExtensions"] == ["meta"]  # type: ignore[index]
    await ok("group", "create", "acme", "lab")
    await ok("group", "update", "acme", "lab", "--description", "bench")
    assert (await ok("group", "get", "acme", "lab"))["description"] == "bench"  # type: ignore[index]
    await ok("device", "create", "acme", "d1", "--app-version", "v1", "--attr", "a=1")
    device = await ok(
        "device", "update", "acme", "d1", "--group", "lab", "--clear-app-version", "--attr", "b=2", "--disabled"
    )
    assert (device["group"], device["appVersion"], device["attributes"], device["enabled"]) == (  # type: ignore[index]
        "lab",
        None,
        {"b": "2"},
        False,
    )
    r = await cli(gateway, "device", "update", "acme", "d1")
    assert r.returncode == 2 and "nothing to change" in r.stderr
    history = await ok("device", "history", "acme", "d1")
    assert history and history[0]["event"]  # type: ignore[index]
    token = (await ok("token", "issue", "acme", "d1"))["token"]  # type: ignore[index]
    assert (await ok("token", "get", "acme", token))["device"] == "d1"  # type: ignore[index]
    await done("token", "delete", "acme", token)
    assert await ok("token", "list", "acme", "d1") == []
    await ok("password", "set", "acme", "d1", "sensor", stdin="pw\n")
    assert [p["authId"] for p in await ok("password", "list", "acme", "d1")] == ["sensor"]  # type: ignore[union-attr]
    assert (await ok("password", "set-state", "acme", "d1", "sensor", "suspended"))["state"] == "suspended"  # type: ignore[index]
    await done("password", "delete", "acme", "d1", "sensor")
    assert await ok("password", "list", "acme", "d1") == []
    assert await ok("certificate", "list", "acme", "d1") == []
    await ok("service-account", "create", "acme", "app")
    assert [a["username"] for a in await ok("service-account", "list", "acme")] == ["app@acme"]  # type: ignore[union-attr]
    await done("service-account", "delete", "acme", "app")
    assert await ok("service-account", "list", "acme") == []
    assert await ok("metadata", "set", "acme", "d1", '{"city": "Kyiv", "floor": 2}') == {"city": "Kyiv", "floor": 2}
    assert await ok("metadata", "set", "acme", "d1", '{"room": 5}') == {"city": "Kyiv", "floor": 2, "room": 5}
    r = await cli(gateway, "metadata", "delete", "acme", "d1", "floor,city")
    assert r.returncode == 2 and "no ','" in one_line_error(r)
    assert await ok("metadata", "delete", "acme", "d1", "floor", "room") == {"city": "Kyiv"}
    assert await ok("metadata", "set", "acme", "d1", '{"x": 1}', "--replace") == {"x": 1}
    assert await ok("metadata", "get", "acme", "d1") == {"x": 1}
    r = await cli(gateway, "metadata", "set", "acme", "d1", "[1]")
    assert "must be an object" in one_line_error(r)
    r = await cli(gateway, "metadata", "get", "acme", "d1")
    assert r.returncode == 0 and "x" in r.stdout and "1" in r.stdout
    accepted = await ok("command", "invoke", "acme", "d1", "reboot", '{"delay": 5}', "--no-wait")
    command = await ok("command", "get", "acme", "d1", "reboot", str(accepted["id"]))  # type: ignore[index]
    assert command["state"] == "pending" and command["commandPayload"] == {"delay": 5}  # type: ignore[index]
    r = await cli(gateway, "command", "invoke", "acme", "d1", "reboot", "--timeout-ms", "1000")
    assert "504: no result within 1000 ms" in one_line_error(r)
    r = await cli(gateway, "data", "last", "acme", "d1")
    assert "404" in one_line_error(r)
    await ok("device", "enable", "acme", "d1")
    await done("device", "delete", "acme", "d1", "--yes")
    assert [t["id"] for t in await ok("device", "tombstone", "list", "acme")] == ["d1"]  # type: ignore[union-attr]
    assert await ok("ca", "tombstone", "list", "acme") == []
    r = await cli(gateway, "ca", "tombstone", "delete", "acme", "ab" * 32)
    assert "404" in one_line_error(r)
    assert (await ok("device", "connected", "acme"))["devices"] == []  # type: ignore[index]
    assert await ok("import-job", "list", "acme") == []
    assert (await ok("metrics"))["node"] == "test-node"  # type: ignore[index]
    r = await cli(gateway, "metrics", "--prometheus")
    assert r.returncode == 0 and "gateway_connects_total" in r.stdout
    audit = await ok("audit", "--tenant", "acme", "--limit", "1000")
    actions = [e["action"] for e in audit["entries"]]  # type: ignore[index]
    assert (
        "PATCH /v1/tenants/{tenant}/devices/{device}" in actions
        and "DELETE /v1/tenants/{tenant}/devices/{device}" in actions
    )
    r = await cli(gateway, "whitelist", "reload", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"appVersions": []}
    r = await cli(gateway, "audit", "--limit", "2")
    assert r.returncode == 0 and "next: " in r.stdout and "admin:" in r.stdout


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Not the gateway: answers that must still end in one clean line."""

    def do_GET(self) -> None:
        if self.path.startswith("/escape/"):
            self._answer(500, b'{"message": "boom\\u001b[2J\\ncleared"}', "application/json")
        elif self.path.startswith("/html/"):
            self._answer(200, b"<html>\n<body>hello</body></html>", "text/html")
        else:
            self.send_response(302)
            self.send_header("Location", "http://user:hunter2@127.0.0.1:1/v1/tenants")
            self.end_headers()

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_answers_from_something_else_than_the_gateway_are_one_clean_line(gateway: Gateway) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        r = await cli(gateway, "--url", f"{base}/escape", "--token", "t", "tenant", "list")
        assert "500: boom [2J cleared" in one_line_error(r, "\x1b")
        r = await cli(gateway, "--url", f"{base}/html", "--token", "t", "tenant", "list")
        assert "something other than JSON" in one_line_error(r)
        r = await cli(gateway, "--url", f"{base}/moved", "--token", "t", "tenant", "list")
        assert "302: redirected to http://127.0.0.1:1/v1/tenants" in one_line_error(r, "hunter2")
    finally:
        server.shutdown()
        server.server_close()
