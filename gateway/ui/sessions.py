"""Browser sessions opened with the admin token, for the dashboard (/ui) and the API docs (/docs) alike:
the cookie holds a random session id, never the admin token; the gateway keeps only its SHA-256, in
memory (a restart logs everyone out), a bounded number of them, each for 8 hours. Signing out ends
the session here, so a copy of its cookie opens nothing afterwards. A session opens its own scope
only: a docs session shows no dashboard page, a dashboard session no docs."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "gateway_ui"
COOKIE_PATH = "/ui"
LIFETIME_S = 8 * 3600
MAX_SESSIONS = 64
"""For all scopes together; past it a login ends the session that would expire first."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a session opens, and the cookie that carries it."""

    name: str
    cookie: str
    path: str


UI = Scope("ui", COOKIE, COOKIE_PATH)
DOCS = Scope("docs", "gateway_docs", "/")  # /docs and /openapi.json: no narrower path holds both


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, *, lifetime_s: float = LIFETIME_S, max_sessions: int = MAX_SESSIONS) -> None:
        self._lifetime = lifetime_s
        self._max = max_sessions
        self._expiry: dict[str, tuple[float, str]] = {}  # sha256(session id) -> (monotonic expiry, scope name)

    def __len__(self) -> int:
        return len(self._expiry)

    def open(self, scope: Scope) -> str:
        now = time.monotonic()
        self._expiry = {k: v for k, v in self._expiry.items() if v[0] > now}
        while len(self._expiry) >= self._max:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        session_id = secrets.token_urlsafe(32)
        self._expiry[_key(session_id)] = (now + self._lifetime, scope.name)
        return session_id

    def valid(self, request: Request, scope: Scope) -> bool:
        session_id = request.cookies.get(scope.cookie)
        if not session_id:
            return False
        found = self._expiry.get(_key(session_id))
        return found is not None and found[1] == scope.name and found[0] > time.monotonic()

    def close(self, request: Request, scope: Scope) -> None:
        session_id = request.cookies.get(scope.cookie)
        key = _key(session_id) if session_id else None
        if key is not None and self._expiry.get(key, (0.0, ""))[1] == scope.name:
            del self._expiry[key]


def set_cookie(response: Response, request: Request, scope: Scope, session_id: str) -> None:
    """HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it), Secure when
    the request came over HTTPS (a TLS proxy saying so with X-Forwarded-Proto from loopback counts):
    on plain-HTTP loopback a Secure cookie would never be sent back."""
    response.set_cookie(
        scope.cookie,
        session_id,
        max_age=LIFETIME_S,
        path=scope.path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, scope: Scope) -> None:
    response.delete_cookie(
        scope.cookie, path=scope.path, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
