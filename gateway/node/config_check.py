"""What `mqtt-gateway check-config` adds to loading the settings: the files they name, and the settings
as TOML. Only reads: it runs as a service's ExecStartPre and by hand beside a running gateway."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pydantic import SecretStr

from pki.files import package_holding
from pki.names import LOOPBACK_NAMES, WILDCARD_HOSTS
from pki.server_cert import ServerCertificateError, check_server_certificate

from ..kp1.whitelist import WhitelistError, load_whitelist
from .settings import GatewaySettings, squeeze

_READ = os.R_OK
_READ_WRITE = os.R_OK | os.W_OK


def file_problems(settings: GatewaySettings) -> list[str]:
    """One line per file or directory of the settings that `serve` could not use."""
    problems = _data_dir_problems(settings)
    if settings.epmx_whitelist is not None:
        try:
            load_whitelist(settings.epmx_whitelist)
        except WhitelistError as exc:
            where = "" if settings.epmx_whitelist.is_absolute() else f" (relative to {Path.cwd()})"
            problems.append(f"invalid setting 'epmx_whitelist': {squeeze(str(exc))}{where}")
    for cert, key, name in (
        (settings.tls_cert_file, settings.tls_key_file, "tls_cert_file"),
        (settings.api_tls_cert_file, settings.api_tls_key_file, "api_tls_cert_file"),
    ):
        if cert is not None and key is not None:
            try:
                check_server_certificate(cert, key)
            except ServerCertificateError as exc:
                problems.append(f"invalid setting '{name}': {exc}")
    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append("invalid setting 'event_loop': uvloop is not installed (pip install 'mqtt-gateway[fast]')")
    return problems


def certificate_warning(settings: GatewaySettings) -> str | None:
    """Listening on every address with the development server certificate for loopback names only:
    devices on other hosts that check the server's name cannot connect."""
    if not settings.tls_enabled or settings.tls_cert_file is not None or settings.host not in WILDCARD_HOSTS:
        return None
    if any(name not in LOOPBACK_NAMES for name in settings.tls_server_names):
        return None
    return (
        f"host {settings.host}: the development server certificate ({settings.tls_dir / 'server.pem'}) names only "
        f"{', '.join(LOOPBACK_NAMES)}; devices on other hosts need the names they dial in tls_server_names "
        "(or your own certificate in tls_cert_file)"
    )


def _data_dir_problems(settings: GatewaySettings) -> list[str]:
    data_dir = settings.data_dir
    if "\x00" in str(data_dir):  # exists() would only say False
        return ["invalid setting 'data_dir': a path cannot contain a NUL character"]
    try:
        if (package := package_holding(data_dir)) is not None:
            return [f"invalid setting 'data_dir': {str(data_dir)!r} is inside the Python package {str(package)!r}"]
        if data_dir.exists() and not data_dir.is_dir():
            return [f"invalid setting 'data_dir': {str(data_dir)!r} is not a directory"]
        if not data_dir.exists():
            parent = next(p for p in data_dir.absolute().parents if p.exists())
            if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
                return [
                    f"invalid setting 'data_dir': {str(data_dir)!r} does not exist and {str(parent)!r} is not writable"
                ]
            return []
        if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
            return [f"invalid setting 'data_dir': {str(data_dir)!r} is not writable by this user (uid {os.getuid()})"]
        needed = {
            settings.registry_path: _READ_WRITE,
            settings.admin_token_path: _READ,
            settings.tls_dir / "ca.pem": _READ,
            settings.tls_dir / "ca.key": _READ,
            settings.tls_dir / "server.pem": _READ_WRITE,
            settings.tls_dir / "server.key": _READ_WRITE,
        }
        return [
            f"{str(path)!r} (in data_dir) is not {'readable and writable' if mode == _READ_WRITE else 'readable'}"
            " by this user"
            for path, mode in needed.items()
            if path.exists() and not os.access(path, mode)
        ]
    except OSError as exc:
        return [f"invalid setting 'data_dir': {str(data_dir)!r}: {squeeze(str(exc))}"]


def as_toml(settings: GatewaySettings) -> str:
    """Every setting as a TOML line `serve --config` would take back; secrets (none yet) as ***."""
    lines = []
    for name in GatewaySettings.model_fields:
        value = getattr(settings, name)
        if value is None:
            lines.append(f"# {name} is not set")
        elif isinstance(value, SecretStr):
            lines.append(f"# {name} = *** (set, not shown)")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = "".join(
        "\\\\" if c == "\\" else '\\"' if c == '"' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in text
    )
    return f'"{escaped}"'
