"""Issue 11.9: `mqtt-gateway check-config` loads settings as `serve` does, checks the files they name, prints
them as TOML and exits 0, or exits 1 with one line per problem (never a traceback)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.node.settings import load_settings

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "gateway.example.toml"
WHITELIST = ROOT / "config" / "epmx-whitelist.example.yaml"


def check_config(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def refused(r: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines of a refused config, after checking that it was refused cleanly."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("mqtt-gateway: ") for line in lines), r.stderr
    return lines


def test_the_example_config_is_valid_and_printed_back_as_toml(tmp_path: Path) -> None:
    r = check_config("--config", str(EXAMPLE), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# mqtt-gateway check-config: valid.")
    printed = tmp_path / "printed.toml"
    printed.write_text(r.stdout)
    effective = load_settings(printed)
    assert effective.model_dump() == load_settings(EXAMPLE, data_dir=tmp_path / "data").model_dump()
    assert not (tmp_path / "data").exists()  # it only reads


def test_it_sees_what_serve_would_see_env_and_flags_included(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(f'mqtt_port = 1111\napi_port = 2222\nepmx_whitelist = "{WHITELIST}"\n')
    r = check_config(
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path),
        "--api-port",
        "3333",
        env={"GATEWAY_MQTT_PORT": "4444", "GATEWAY_API_DOCS_PUBLIC": "true"},
    )
    assert r.returncode == 0, r.stderr
    effective = tomllib.loads(r.stdout)
    assert (effective["mqtt_port"], effective["api_port"], effective["api_docs_public"]) == (4444, 3333, True)
    assert effective["epmx_whitelist"] == str(WHITELIST)


def test_several_problems_get_one_line_each(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('mqtt_port = 70000\nmqtt_prot = 1\nconnect_timeout = "soon"\nlog_level = "LOUD"\n')
    lines = refused(check_config("--config", str(config)))
    assert len(lines) == 4, lines
    for name in ("'mqtt_port'", "unknown setting 'mqtt_prot'", "'connect_timeout'", "'log_level'"):
        assert sum(name in line for line in lines) == 1, (name, lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"mqtt_port = \n", "config file"),
        (b"[broker]\nport = 1\n", "unknown setting 'broker'"),
        (b"host = 1883\n", "invalid setting 'host'"),
        (b"tls_enabled = 'yes please'\n", "invalid setting 'tls_enabled'"),
        (b"node_id = 'a/b'\n", "invalid setting 'node_id'"),
        (b"epmx_whitelist = ['a']\n", "invalid setting 'epmx_whitelist'"),
        (b"host = '\xff\xfe'\n", "config file"),  # not UTF-8
        (b"\x00\x01\x02", "config file"),
        (b"x" * 100_000 + b" = 1\n", "unknown setting"),
    ],
    ids=["syntax", "table", "type", "bool", "pattern", "list", "not-utf8", "binary", "long-key"],
)
def test_bad_files_are_one_clear_line(tmp_path: Path, content: bytes, message: str) -> None:
    config = tmp_path / "g.toml"
    config.write_bytes(content)
    (line,) = refused(check_config("--config", str(config), "--data-dir", str(tmp_path)))
    assert message in line and len(line) < 400, line


def test_a_config_that_is_not_a_file(tmp_path: Path) -> None:
    (line,) = refused(check_config("--config", str(tmp_path / "nope.toml")))
    assert "does not exist" in line
    (line,) = refused(check_config("--config", str(tmp_path)))
    assert "is not a file" in line


def test_bad_environment_is_named(tmp_path: Path) -> None:
    (line,) = refused(check_config("--data-dir", str(tmp_path), env={"GATEWAY_MQTTS_PORT": "tls"}))
    assert "invalid setting 'mqtts_port'" in line
    (line,) = refused(check_config("--api-port", "-1", "--data-dir", str(tmp_path)))
    assert "invalid setting 'api_port'" in line


def test_the_whitelist_file_must_exist_and_load(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('epmx_whitelist = "missing.yaml"\n')
    (line,) = refused(check_config("--config", str(config), "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "'epmx_whitelist'" in line and "missing.yaml" in line and f"relative to {tmp_path}" in line
    broken = tmp_path / "broken.yaml"
    broken.write_text("applications:\n  app: [unclosed\n    - x: : y\n")
    config.write_text(f'epmx_whitelist = "{broken}"\n')
    (line,) = refused(check_config("--config", str(config), "--data-dir", str(tmp_path / "d")))
    assert "'epmx_whitelist'" in line and str(broken) in line
    broken.write_text("applications: 5\n")
    (line,) = refused(check_config("--config", str(config), "--data-dir", str(tmp_path / "d")))
    assert "'applications' mapping" in line


def test_the_data_dir_must_be_usable(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    (line,) = refused(check_config("--data-dir", str(a_file)))
    assert "'data_dir'" in line and "is not a directory" in line
    (line,) = refused(check_config("--data-dir", str(a_file / "below")))
    assert "'data_dir'" in line and "does not exist" in line and "not writable" in line
    config = tmp_path / "g.toml"
    config.write_text('data_dir = "a\\u0000b"\n')  # TOML allows it; no file system does
    (line,) = refused(check_config("--config", str(config)))
    assert "'data_dir'" in line


def test_uvloop_needs_the_fast_extra(tmp_path: Path) -> None:
    r = check_config("--data-dir", str(tmp_path), env={"GATEWAY_EVENT_LOOP": "uvloop"})
    if importlib.util.find_spec("uvloop") is not None:
        assert r.returncode == 0, r.stderr
    else:
        (line,) = refused(r)
        assert "'event_loop'" in line and "[fast]" in line


def test_no_secret_is_printed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "admin-token").write_text("sup3r-s3cret-admin-token\n")
    r = check_config("--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert "sup3r-s3cret" not in r.stdout + r.stderr


def test_wildcard_host_warns_about_the_certificate_names(tmp_path: Path) -> None:
    r = check_config("--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert r.returncode == 0 and "warning" in r.stderr and "localhost, 127.0.0.1, ::1" in r.stderr
    r = check_config("--host", "0.0.0.0", "--data-dir", str(tmp_path), env={"GATEWAY_TLS_ENABLED": "false"})
    assert r.returncode == 0 and r.stderr == ""
