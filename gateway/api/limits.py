"""What the API refuses before a route runs: bodies over the configured size (before they are read
into memory), and requests without the admin token over their rate per address."""

from __future__ import annotations

import math
import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth.throttle import BucketMap
from ..ops.metrics import Metrics
from .callers import Caller, address_of, caller_of
from .deps import UNAUTHENTICATED
from .errors import error_response


class BodySizeLimit:
    """`max_bytes` for every body, except paths matching a pattern of `larger` (a CSV upload)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._larger = [(re.compile(pattern), limit) for pattern, limit in (larger or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        max_bytes = next((limit for pattern, limit in self._larger if pattern.match(path)), self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > max_bytes):
                await error_response(413, f"request body over {max_bytes} bytes")(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise HTTPException(413, f"request body over {max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


OPEN_PATHS = ("/healthz", "/ui", "/docs", "/openapi.json")
"""Not counted here: the health check needs no token, and the dashboard and the docs sign in with
sessions of their own (and throttle their sign-in forms themselves)."""


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class UnauthenticatedLimit:
    """Requests without the admin token, per source address (an IPv6 client by its /64): `per_minute`
    on average and `burst` at once; beyond, 429 before any route runs or any body is read. Where the
    token is required anyway (/v1, and /metrics unless public) the 401 is given here too, so an
    anonymous body is never read or parsed. A wrong token is no token. Addresses are remembered while
    their budget refills, at most MAX_KEYS of them (the least recently seen go first)."""

    def __init__(
        self, app: ASGIApp, admin_token: str, metrics: Metrics, *, per_minute: float, burst: int, metrics_public: bool
    ) -> None:
        self.app = app
        self._admin_token = admin_token.encode()
        self._metrics = metrics
        self._per_minute = per_minute
        self._buckets = BucketMap("api_unauthenticated_per_minute", burst, per_minute)
        self._token_paths = ("/v1",) if metrics_public else ("/v1", "/metrics")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or _under(path, OPEN_PATHS) or caller_of(scope, self._admin_token) is Caller.ADMIN:
            await self.app(scope, receive, send)
            return
        # A refusal leaves the body unread: the connection is closed after it, or a client trickling
        # its body would keep it (each byte defers the keep-alive timeout).
        closing = {"Connection": "close"} if _has_body(scope) else {}
        if not self._buckets.take(address_of(scope)):
            self._metrics.api_refused["rate_limited"] += 1
            self._metrics.limits_hit[self._buckets.name] += 1
            retry = {"Retry-After": str(max(1, math.ceil(60 / self._per_minute)))}
            message = "too many requests without the admin token from this address; retry later"
            await error_response(429, message, headers=retry | closing)(scope, receive, send)
            return
        if _under(path, self._token_paths):
            self._metrics.api_refused["unauthenticated"] += 1
            challenge = {"WWW-Authenticate": "Bearer"}
            await error_response(401, UNAUTHENTICATED, headers=challenge | closing)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False
