"""Issue 11.9: deploy/mqtt-gateway.service and deploy/Dockerfile name real commands and options, and
what they run works: check-config, serve, SIGHUP reload, SIGTERM stop, the container's health check.
No docker daemon here, so the image itself is not built; every command it runs is."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx

from gateway.node.runtime import Gateway
from gateway.node.settings import GatewaySettings

from .conftest import served_ports

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "mqtt-gateway.service"
DOCKERFILE = DEPLOY / "Dockerfile"
INSTALLED = "/opt/mqtt-gateway/bin/mqtt-gateway"
CONFIG = "/etc/mqtt-gateway/gateway.toml"


def script_name() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"mqtt-gateway": "gateway.cli:main"}
    return "mqtt-gateway"


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; a key may repeat (SystemCallFilter)."""
    section, entries = "", []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        entries.append((section, key, value))
    return entries


def unit(key: str) -> str:
    values = [v for _, k, v in unit_entries() if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def gateway_argv(command: str, state_dir: Path, config: Path) -> list[str]:
    """A unit command line as this checkout runs it: %S and the config file made local."""
    argv = shlex.split(command.replace("%S", str(state_dir)))
    assert argv[0] == INSTALLED and Path(argv[0]).name == script_name(), argv
    return [sys.executable, "-m", "gateway", *(str(config) if a == CONFIG else a for a in argv[1:])]


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_unit_commands_are_real_commands_and_options(tmp_path: Path) -> None:
    pre, start = unit("ExecStartPre"), unit("ExecStart")
    assert shlex.split(pre)[1] == "check-config" and shlex.split(start)[1] == "serve"
    # the check validates exactly what serve starts with
    assert shlex.split(pre)[2:] == shlex.split(start)[2:]
    for command in (pre, start):
        r = run([*gateway_argv(command, tmp_path, tmp_path / "g.toml"), "--help"])  # an unknown option fails
        assert r.returncode == 0, r.stderr
    assert unit("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_unit_is_hardened() -> None:
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "mqtt-gateway",
        "StateDirectoryMode": "0700",
        "WorkingDirectory": "%S/mqtt-gateway",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "UMask": "0077",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "Type": "exec",
    }
    for key, value in expected.items():
        assert unit(key) == value, key
    # every path the service writes is its state directory: --data-dir names it on both command lines
    for key in ("ExecStartPre", "ExecStart"):
        assert "--data-dir %S/mqtt-gateway" in unit(key)
    assert int(unit("LimitNOFILE")) > GatewaySettings.model_fields["max_connections"].default
    sections = {s for s, _, _ in unit_entries()}
    assert sections == {"Unit", "Service", "Install"}


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")  # .ci/run installs it when missing
    assert analyze is not None, "systemd-analyze is not installed: `apt-get install systemd` to verify the unit file"
    # verify wants ExecStart's program to exist: an executable stands in for the installed one
    program = tmp_path / "mqtt-gateway"
    program.write_text(f'#!/bin/sh\nexec {sys.executable} -m gateway "$@"\n')
    program.chmod(0o755)
    copy = tmp_path / "mqtt-gateway.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(program)))
    r = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # verify exits 0 even for an unknown key or a bad value: it only prints them
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


async def test_unit_commands_check_start_reload_and_stop(tmp_path: Path) -> None:
    """ExecStartPre, ExecStart and ExecReload as systemd would run them (but in this checkout)."""
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text('mqtt_port = 0\nmqtts_port = 0\napi_port = 0\nnode_id = "unit-test"\n')
    pre = await asyncio.to_thread(run, gateway_argv(unit("ExecStartPre"), state, config))
    assert pre.returncode == 0, pre.stderr
    assert tomllib.loads(pre.stdout)["data_dir"] == str(state / "mqtt-gateway")
    assert not (state / "mqtt-gateway").exists()  # check-config only reads

    data_dir = state / "mqtt-gateway"
    proc = subprocess.Popen(
        gateway_argv(unit("ExecStart"), state, config), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        ports = await served_ports(data_dir, proc)
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{ports['api']}/healthz")).status_code == 200
        reload = unit("ExecReload").replace("$MAINPID", str(proc.pid))
        assert (await asyncio.to_thread(run, shlex.split(reload))).returncode == 0
        await asyncio.sleep(0.5)
        assert proc.poll() is None, "SIGHUP stopped the gateway"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert "EPMX whitelist reloaded" in proc.stderr.read().decode()


# -- Dockerfile -------------------------------------------------------------------------------------------


def docker_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


def docker(instruction: str) -> list[str]:
    return [args for name, args in docker_instructions() if name == instruction]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in docker("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_dockerfile_runs_a_real_command_as_a_user(tmp_path: Path) -> None:
    assert docker("FROM") == ["python:3.11-slim"]
    (entrypoint,) = docker("ENTRYPOINT")
    (cmd,) = docker("CMD")
    assert json.loads(entrypoint) == [script_name()]
    assert json.loads(cmd) == ["serve"]
    assert run([sys.executable, "-m", "gateway", *json.loads(cmd), "--help"]).returncode == 0
    (user,) = docker("USER")
    useradd = next(args for args in docker("RUN") if "useradd" in args)
    assert user not in ("root", "0") and user in useradd.split() and "chown gateway:gateway /data" in useradd
    # the image's settings, checked as `docker run IMAGE check-config` would (with a local data dir)
    env = docker_env()
    gateway_env = {k: v for k, v in env.items() if k.startswith("GATEWAY_")}
    assert gateway_env == {"GATEWAY_DATA_DIR": "/data", "GATEWAY_HOST": "0.0.0.0", "GATEWAY_NODE_ID": "gateway"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    r = run(
        [sys.executable, "-m", "gateway", "check-config"],
        env={**clean, **gateway_env, "GATEWAY_DATA_DIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr
    effective = tomllib.loads(r.stdout)
    assert effective["host"] == "0.0.0.0" and effective["node_id"] == "gateway"
    assert effective["data_dir"] == str(tmp_path)
    assert "names only localhost, 127.0.0.1, ::1" in r.stderr  # the development certificate's names
    assert json.loads(docker("VOLUME")[0]) == [env["GATEWAY_DATA_DIR"]]
    fields = GatewaySettings.model_fields
    exposed = {int(p) for p in docker("EXPOSE")[0].split()}
    assert exposed == {fields[name].default for name in ("mqtt_port", "mqtts_port", "api_port")}


def test_dockerfile_copies_what_exists_and_its_ignore_file_lets_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore and "gateway-data" not in allowed
    for args in docker("COPY"):
        *sources, _target = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source in allowed, f"{source} is not let through by Dockerfile.dockerignore"
    # what pip needs to build the package: pyproject.toml names README.md, and the three packages
    assert {"pyproject.toml", "README.md", "gateway", "registry", "pki"} <= allowed


def healthcheck_argv() -> list[str]:
    (check,) = docker("HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    argv = json.loads(command)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def test_dockerfile_healthcheck_against_a_gateway(gateway: Gateway, tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_DATA_DIR": str(gateway.settings.data_dir)}
    r = await asyncio.to_thread(run, healthcheck_argv(), env=env)
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(run, healthcheck_argv(), env={**env, "GATEWAY_DATA_DIR": str(tmp_path)})
    assert r.returncode != 0  # no gateway there: unhealthy
