"""Signing in with the admin token and out, for the dashboard (/ui/login) and the API docs (/docs/login)
alike: one form, one throttle (gateway/auth/login_throttle.py), one session store (sessions.py).

Both are same-origin POSTs: a cross-site form can sign no one in or out (Origin and Sec-Fetch-Site
are checked), and a login needs the token anyway. The throttle is asked before the form is read, so
a throttled guess costs neither the body nor the comparison, and its tokens are taken only after,
so a client stalling its body holds none. A successful login also sets a browser
cookie (30 days, HttpOnly, SameSite=Strict, Path=/) that authorizes nothing: it gives this browser a
guessing budget of its own, so attackers elsewhere, or behind the admin's own address, cannot lock
it out.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import RedirectResponse, Response

from ..auth.login_throttle import LoginThrottle
from ..auth.throttle import Attempt, address_key
from ..node.settings import GatewaySettings
from ..ops.audit import BurstLog, audit
from .sessions import Scope, Sessions, clear_cookie, set_cookie

BROWSER_COOKIE = "gateway_browser"
BROWSER_LIFETIME_S = 30 * 86400


@dataclass
class AdminLogins:
    sessions: Sessions
    throttle: LoginThrottle
    throttled_log: BurstLog = field(
        default_factory=lambda: BurstLog("login_throttled", level=logging.WARNING, max_keys=1_000)
    )
    """Per address: a flood of throttled guesses is a line and a count, not a line each."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A login or logout that did not happen; the route shows `message` on its own page."""

    status: int
    message: str
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def install(app: FastAPI, settings: GatewaySettings) -> None:
    app.state.admin_logins = AdminLogins(Sessions(), LoginThrottle.of(settings))


def logins(request: Request) -> AdminLogins:
    return request.app.state.admin_logins  # type: ignore[no-any-return]


def signed_in(request: Request, scope: Scope) -> bool:
    return logins(request).sessions.valid(request, scope)


def same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def _form_token(request: Request) -> str:
    """The `token` field of an urlencoded form; ValueError says what is wrong with the form."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ValueError("send the login form (application/x-www-form-urlencoded)")
    try:
        fields = parse_qs((await request.body()).decode("utf-8"), max_num_fields=8)
    except UnicodeDecodeError:
        raise ValueError("the form is not UTF-8") from None
    tokens = fields.get("token", [])
    if len(tokens) != 1 or not tokens[0].strip():
        raise ValueError("enter the admin token")
    return tokens[0].strip()


async def sign_in(request: Request, scope: Scope, then: str) -> Response | Refused:
    """A redirect to `then` carrying the new session's cookie, or why not."""
    remote = request.client.host if request.client else None
    event = f"{scope.name}_login"
    if not same_origin(request):
        audit(f"{event}_refused", reason="cross_site", remote=remote)
        return Refused(403, "cross-site login refused")
    state = logins(request)
    browser = request.cookies.get(BROWSER_COOKIE)
    throttled = state.throttle.check(remote, browser)
    if throttled is not None:
        return _throttled(request, state, remote, throttled)
    try:
        token = await _form_token(request)
    except ValueError as exc:  # no guess: nothing counted
        return Refused(400, str(exc))
    except ClientDisconnect:  # gone before its form was whole: no traceback in the log for each one
        return Refused(400, "the form was not sent whole")
    attempt = state.throttle.reserve(remote, browser)  # no await from here to the verdict
    if attempt.throttled_by is not None:  # a parallel guess took the last token meanwhile
        return _throttled(request, state, remote, attempt)
    expected: str = request.app.state.admin_token
    if not secrets.compare_digest(token.encode(), expected.encode()):
        attempt.failed()
        audit(f"{event}_refused", reason="wrong_token", remote=remote)
        return Refused(401, "wrong token")
    attempt.release()
    audit(event, remote=remote)
    response = RedirectResponse(then, status_code=303)
    issued = state.throttle.remember(browser)
    if issued is not None:  # first, so that the session's cookie is the last Set-Cookie header
        response.set_cookie(
            BROWSER_COOKIE,
            issued,
            max_age=BROWSER_LIFETIME_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    set_cookie(response, request, scope, state.sessions.open(scope))
    return response


def _throttled(request: Request, state: AdminLogins, remote: str | None, attempt: Attempt) -> Refused:
    assert attempt.throttled_by is not None
    request.app.state.gateway.services.metrics.limits_hit[attempt.throttled_by] += 1
    state.throttled_log.note(address_key(remote or ""), remote=remote, limit=attempt.throttled_by)
    wait = max(1, math.ceil(attempt.retry_after))
    return Refused(429, f"too many wrong tokens: try again in {wait} s", retry_after=wait)


def sign_out(request: Request, scope: Scope, then: str) -> Response | Refused:
    """Ends the session here (a copy of its cookie opens nothing after) and clears the cookie."""
    if not same_origin(request):
        return Refused(403, "cross-site logout refused")
    logins(request).sessions.close(request, scope)
    response = RedirectResponse(then, status_code=303)
    clear_cookie(response, request, scope)
    return response
