"""Jinja2 templates shipped in the package, autoescaped: device ids, client ids, metadata and CA
names are input from devices and operators, shown as text, never as markup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from starlette.responses import HTMLResponse, Response

from registry.models import now_ms

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

SECURITY_HEADERS = {
    # No inline script or style: even markup that slipped through escaping could not run.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes a browser send `Origin: null`
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "never"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = max(0, (now_ms() - int(value.timestamp() * 1000)) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


_env.filters["when"] = _when
_env.filters["ago"] = _ago
_env.filters["seg"] = lambda value: quote(str(value), safe="")  # one URL path segment


R = TypeVar("R", bound=Response)


def secure(response: R) -> R:
    response.headers.update(SECURITY_HEADERS)
    return response


def render(template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    return secure(HTMLResponse(_env.get_template(template).render(**context), status_code=status))
