"""Id templates over a device certificate: `{{subject-cn}}`, `{{subject-dn}}`, `{{subject-o}}`,
`{{subject-ou}}`, `{{serial}}`, `{{fingerprint}}` (Hono's placeholders, plus the last two)."""

from __future__ import annotations

import re
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.oid import NameOID

from .certs import cert_sha256, subject_field

_PLACEHOLDER = re.compile(r"\{\{([a-z-]+)\}\}")

_FIELDS: dict[str, Callable[[x509.Certificate], str]] = {
    "subject-cn": lambda c: subject_field(c, NameOID.COMMON_NAME),
    "subject-dn": lambda c: c.subject.rfc4514_string(),
    "subject-o": lambda c: subject_field(c, NameOID.ORGANIZATION_NAME),
    "subject-ou": lambda c: subject_field(c, NameOID.ORGANIZATIONAL_UNIT_NAME),
    "serial": lambda c: format(c.serial_number, "x"),
    "fingerprint": cert_sha256,
}

DEFAULT_DEVICE_ID_TEMPLATE = "{{subject-cn}}"
DEFAULT_AUTH_ID_TEMPLATE = "{{subject-dn}}"


def template_error(template: str) -> str | None:
    """Why a template cannot be used, or None."""
    if not template or len(template) > 256:
        return "a template is 1-256 characters"
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in _FIELDS})
    if unknown:
        return f"unknown placeholder(s): {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
    return None


def render(template: str, cert: x509.Certificate) -> str:
    return _PLACEHOLDER.sub(lambda m: _FIELDS[m.group(1)](cert), template)
