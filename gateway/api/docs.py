"""The API docs in a browser: Swagger UI at /docs and the OpenAPI document at /openapi.json.

Swagger UI's files come from the `swagger-ui-bundle-v2` package, served by the gateway itself: the
docs work on a network without internet access, and the page loads nothing from anywhere else (its
Content-Security-Policy says so to the browser too).

Unless `api_docs_public`, both need the admin token. A browser cannot send a bearer header when it
opens a page, so /docs/login takes the token once and opens a session that opens /docs and
/openapi.json only: the dashboard's login, throttle and session store (gateway/ui/admin_login.py),
with a scope and cookie of its own. The cookie is a random session id, not the token, so it never
authorizes a /v1 call, and signing out ends the session. "Try it out" still needs the token, given
to Swagger UI's "Authorize".
"""

from __future__ import annotations

import html
from pathlib import Path

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from ..ui import admin_login
from ..ui.admin_login import Refused
from ..ui.sessions import DOCS as SCOPE
from .deps import bearer_token, is_admin_token
from .errors import error_response

DOCS = "/docs"
LOGIN = "/docs/login"
LOGOUT = "/docs/logout"
OPENAPI = "/openapi.json"
ASSETS = "/docs/assets"
COOKIE = SCOPE.cookie

_DIST = Path(swagger_ui_bundle.swagger_ui_path)
_VERSION = _DIST.name.removeprefix("swagger-ui-")
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
# Swagger UI's page runs one inline script; nothing may come from another origin.
_PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def asset_url(name: str) -> str:
    return f"{ASSETS}/{name}?v={_VERSION}"


def install(app: FastAPI, *, public: bool) -> None:
    """Adds /openapi.json, /docs, its login and its assets (none of them in the OpenAPI document)."""

    def allowed(request: Request, token: str) -> bool:
        return public or is_admin_token(request, token) or admin_login.signed_in(request, SCOPE)

    @app.get(OPENAPI, include_in_schema=False)
    async def openapi(request: Request) -> Response:
        if not allowed(request, await bearer_token(request)):
            return error_response(
                401, "missing or wrong bearer token (or sign in at /docs/login)", headers={"WWW-Authenticate": "Bearer"}
            )
        return JSONResponse(app.openapi())

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui(request: Request) -> Response:
        if not allowed(request, await bearer_token(request)):
            return RedirectResponse(LOGIN, status_code=303)
        page = get_swagger_ui_html(
            openapi_url=OPENAPI,
            title=f"{app.title}: docs",
            swagger_js_url=asset_url("swagger-ui-bundle.js"),
            swagger_css_url=asset_url("swagger-ui.css"),
            swagger_favicon_url=asset_url("favicon-32x32.png"),
            # validatorUrl: Swagger UI would otherwise send the document to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )
        page.headers.update(_PAGE_HEADERS)
        return page

    @app.get(LOGIN, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if public:
            return RedirectResponse(DOCS, status_code=303)
        return _login_page(signed_in=admin_login.signed_in(request, SCOPE))

    @app.post(LOGIN, include_in_schema=False)
    async def login(request: Request) -> Response:
        if public:
            return RedirectResponse(DOCS, status_code=303)
        result = await admin_login.sign_in(request, SCOPE, DOCS)
        if isinstance(result, Refused):
            page = _login_page(message=result.message, status=result.status)
            page.headers.update(result.headers())
            return page
        return result

    @app.post(LOGOUT, include_in_schema=False)
    async def logout(request: Request) -> Response:
        result = admin_login.sign_out(request, SCOPE, LOGIN)
        if isinstance(result, Refused):
            return _login_page(message=result.message, status=result.status)
        return result

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media_type = _FILES.get(name)
        if media_type is None:
            return error_response(404, f"no docs asset {name!r}")
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        return FileResponse(_DIST / name, media_type=media_type, headers=headers)


def _login_page(*, message: str = "", signed_in: bool = False, status: int = 200) -> HTMLResponse:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""  # our own strings, escaped anyway
    sign_out = (
        f'<form method="post" action="{LOGOUT}"><p>Signed in. <a href="{DOCS}">Open the docs</a> or '
        "<button>sign out</button></p></form>"
        if signed_in
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="icon" href="{asset_url("favicon-32x32.png")}">
<title>mqtt-gateway API docs: sign in</title>
<style>
body {{ font-family: sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; }}
input {{ width: 100%; font-family: monospace; padding: .4rem; box-sizing: border-box; }}
button {{ margin-top: .8rem; padding: .4rem 1rem; }}
.error {{ color: #b00020; }}
</style>
</head>
<body>
<h1>mqtt-gateway API docs</h1>
<p>The docs need the admin token: the content of <code>admin-token</code> in the gateway's data directory.</p>
{note}
<form method="post" action="{LOGIN}">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Open the docs</button>
</form>
{sign_out}
</body>
</html>
"""
    headers = dict(_PAGE_HEADERS)
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "script-src 'self' 'unsafe-inline'", "script-src 'none'"
    )
    # no-referrer would make the browser send `Origin: null` with the form: refused as cross-site
    headers["Referrer-Policy"] = "same-origin"
    return HTMLResponse(page, status_code=status, headers=headers)
