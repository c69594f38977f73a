"""Dashboard sessions: the cookie holds a random session id, never the admin token; the gateway keeps
only its SHA-256, in memory (a restart logs everyone out), a bounded number of them, each for 8 hours."""

from __future__ import annotations

import hashlib
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "gateway_ui"
COOKIE_PATH = "/ui"
LIFETIME_S = 8 * 3600
MAX_SESSIONS = 64
"""Past it a login ends the session that would expire first."""


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, *, lifetime_s: float = LIFETIME_S, max_sessions: int = MAX_SESSIONS) -> None:
        self._lifetime = lifetime_s
        self._max = max_sessions
        self._expiry: dict[str, float] = {}  # sha256(session id) -> monotonic expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def open(self) -> str:
        now = time.monotonic()
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        while len(self._expiry) >= self._max:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        session_id = secrets.token_urlsafe(32)
        self._expiry[_key(session_id)] = now + self._lifetime
        return session_id

    def valid(self, request: Request) -> bool:
        session_id = request.cookies.get(COOKIE)
        if not session_id:
            return False
        expiry = self._expiry.get(_key(session_id))
        return expiry is not None and expiry > time.monotonic()

    def close(self, request: Request) -> None:
        session_id = request.cookies.get(COOKIE)
        if session_id:
            self._expiry.pop(_key(session_id), None)


def set_cookie(response: Response, request: Request, session_id: str) -> None:
    """HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it), Secure when
    the request came over HTTPS (a TLS proxy saying so with X-Forwarded-Proto from loopback counts):
    on plain-HTTP loopback a Secure cookie would never be sent back."""
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=LIFETIME_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
