"""The names a server certificate can carry, without importing any X.509 code (settings use it)."""

from __future__ import annotations

import ipaddress
import re

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::")  # noqa: S104 (naming them, not binding)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*")


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_server_name(name: str) -> bool:
    """A DNS name (a leading `*.` allowed) of at most 253 characters, or an IP address."""
    return is_ip_address(name) or (len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None)


def server_names(host: str, configured: list[str] | tuple[str, ...] = LOOPBACK_NAMES) -> list[str]:
    """The names the development server certificate carries for listeners bound to `host`: the
    configured ones (`tls_server_names`), and `host` itself unless it is a wildcard, which names no
    address a device could dial."""
    names = list(configured)
    if host not in names and host not in WILDCARD_HOSTS:
        names.append(host)
    return names
