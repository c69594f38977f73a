"""One structured (logfmt) line per security-relevant decision, on the `gateway.audit` logger."""

from __future__ import annotations

import hashlib
import logging

log = logging.getLogger("gateway.audit")


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "._:-/@[]" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def audit(event: str, level: int = logging.INFO, **fields: object) -> None:
    if not log.isEnabledFor(level):
        return
    parts = [f"event={event}"] + [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))


def secret_hint(secret: str | None) -> str | None:
    """A short digest that lets operators correlate lines without logging the token itself."""
    if not secret:
        return None
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]
