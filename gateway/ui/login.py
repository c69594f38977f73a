"""Logging in with the admin token and out. Both are same-origin POSTs: a cross-site form can log no
one in or out (Origin and Sec-Fetch-Site are checked), and a login needs the token anyway."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ..ops.audit import audit
from .render import render, secure
from .sessions import Sessions, clear_cookie, set_cookie

router = APIRouter(prefix="/ui")
HOME = "/ui/"
LOGIN = "/ui/login"


def sessions(request: Request) -> Sessions:
    return request.app.state.ui_sessions  # type: ignore[no-any-return]


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


def _redirect(to: str) -> RedirectResponse:
    return secure(RedirectResponse(to, status_code=303))


@router.get("/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    if sessions(request).valid(request):
        return _redirect(HOME)
    return render("login.html")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    remote = request.client.host if request.client else None
    if not same_origin(request):
        audit("ui_login_refused", reason="cross_site", remote=remote)
        return render("login.html", 403, error="cross-site login refused")
    try:
        token = await _form_token(request)
    except ValueError as exc:
        return render("login.html", 400, error=str(exc))
    expected: str = request.app.state.admin_token
    if not secrets.compare_digest(token.encode(), expected.encode()):
        audit("ui_login_refused", reason="wrong_token", remote=remote)
        return render("login.html", 401, error="wrong token")
    audit("ui_login", remote=remote)
    response = _redirect(HOME)
    set_cookie(response, request, sessions(request).open())
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    if not same_origin(request):
        return render("error.html", 403, status=403, message="cross-site logout refused")
    sessions(request).close(request)
    response = _redirect(LOGIN)
    clear_cookie(response, request)
    return response
