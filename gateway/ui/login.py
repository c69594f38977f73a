"""The dashboard's login page, and logging in with the admin token and out (admin_login.py: the same
form, throttle, session store and cross-site checks as the API docs' login)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from . import admin_login
from .admin_login import Refused
from .render import render, secure
from .sessions import UI

router = APIRouter(prefix="/ui")
HOME = "/ui/"
LOGIN = "/ui/login"


@router.get("/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    if admin_login.signed_in(request, UI):
        return secure(RedirectResponse(HOME, status_code=303))
    return render("login.html")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    result = await admin_login.sign_in(request, UI, HOME)
    if isinstance(result, Refused):
        page = render("login.html", result.status, error=result.message)
        page.headers.update(result.headers())
        return page
    return secure(result)


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    result = admin_login.sign_out(request, UI, LOGIN)
    if isinstance(result, Refused):
        return render("error.html", result.status, status=result.status, message=result.message)
    return secure(result)
