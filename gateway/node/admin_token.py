"""The management API's admin bearer token: generated on first start, kept 0600 in the data directory."""

from __future__ import annotations

import secrets
from pathlib import Path

from pki.files import write_private


def ensure_admin_token(path: Path) -> tuple[str, bool]:
    """Returns (token, created_now)."""
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, False
    token = secrets.token_urlsafe(32)
    write_private(path, (token + "\n").encode())
    return token, True
