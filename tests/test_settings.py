"""Settings: defaults, TOML file, GATEWAY_* environment, flags; invalid input stops start-up in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.node.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_DATA_DIR", "GATEWAY_MQTT_PORT", "GATEWAY_NODE_ID"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (str(s.data_dir), s.host, s.mqtt_port, s.mqtts_port, s.api_port) == (
        "gateway-data",
        "127.0.0.1",
        1883,
        8883,
        8080,
    )
    assert s.connect_timeout == 10.0
    assert (s.ws_port, s.wss_port, s.ws_path) == (None, None, "/mqtt")  # WebSocket listeners are off
    assert s.registry_path == Path("gateway-data/registry.sqlite3")


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "g.toml"
    config.write_text("mqtt_port = 1111\napi_port = 2222\nmqtts_port = 3333\n")
    monkeypatch.setenv("GATEWAY_API_PORT", "4444")
    monkeypatch.setenv("GATEWAY_MQTTS_PORT", "5555")
    s = load_settings(config, mqtts_port=6666)
    assert (s.mqtt_port, s.api_port, s.mqtts_port) == (1111, 4444, 6666)


def test_shipped_example_config_loads() -> None:
    example = Path(__file__).parent.parent / "config" / "gateway.example.toml"
    assert load_settings(example).mqtt_port == 1883


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("mqtt_prot = 1\n", "unknown setting 'mqtt_prot'"),
        ("mqtt_port = 70000\n", "invalid setting 'mqtt_port'"),
        ("connect_timeout = -1\n", "invalid setting 'connect_timeout'"),
        ("log_level = 'LOUD'\n", "invalid setting 'log_level'"),
        ("mqtt_port = \n", "config file"),
        ("tls_enabled = false\nwss_port = 8884\n", "invalid setting 'wss_port': Value error, wss needs tls_enabled"),
        ("ws_path = 'mqtt'\n", "invalid setting 'ws_path'"),
        ("ws_path = '/a b'\n", "invalid setting 'ws_path'"),
        ("ws_port = -1\n", "invalid setting 'ws_port'"),
    ],
)
def test_invalid_settings_name_the_setting(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "g.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(config)
    assert "\n" not in str(info.value)


def test_invalid_env_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MQTT_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="invalid setting 'mqtt_port'"):
        load_settings()


def test_serve_stops_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path), "--mqtt-port", "99999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid setting 'mqtt_port'" in lines[0]
    assert not (tmp_path / "registry.sqlite3").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_every_setting_is_documented_and_in_the_example() -> None:
    """docs/configuration.md and config/gateway.example.toml name every setting, with its default."""
    from gateway.node.settings import GatewaySettings

    root = Path(__file__).parent.parent
    docs = (root / "docs" / "configuration.md").read_text()
    example = (root / "config" / "gateway.example.toml").read_text()
    for name, field in GatewaySettings.model_fields.items():
        assert f"| `{name}` | `GATEWAY_{name.upper()}` |" in docs, name
        assert f"{name} = " in example, name
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}` |"))
            assert f"`{field.default}`" in row or f"`{field.default:g}`" in row, (name, row)
