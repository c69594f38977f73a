"""The fleet dashboard at /ui/, on the API's port: server-rendered pages, one script, one stylesheet,
behind a login with the admin token (README, "Dashboard")."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response

from . import assets, login, pages
from .render import secure


async def _to_login(_: Request, __: Exception) -> Response:
    return secure(RedirectResponse(login.LOGIN, status_code=303))


def install(app: FastAPI) -> None:
    """The dashboard's routes; its sessions and login throttle are admin_login.install's."""
    app.add_exception_handler(pages.LoginRequired, _to_login)
    for router in (assets.router, login.router, pages.pages, pages.live):
        app.include_router(router)
