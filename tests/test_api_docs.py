"""Issue 11.7: Swagger UI at /docs from local files, every operation documented, the docs behind the admin
token (bearer header, or the cookie /docs/login sets) unless `api_docs_public`. Issue 17.10: that
cookie is a session of the dashboard's store (signing out ends it), and the login and logout refuse
cross-site POSTs as the dashboard's do."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import httpx
import pytest

from gateway.api.docs import COOKIE
from gateway.node.runtime import Gateway
from gateway.ui.sessions import COOKIE as UI_COOKIE

from .conftest import api_client, ok


def anonymous(gateway: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}", timeout=10)


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/docs/login", data={"token": token})


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


async def test_every_operation_has_a_summary_and_a_description(api: httpx.AsyncClient) -> None:
    spec = await ok(api.get("/openapi.json"))
    ops = operations(spec)
    assert len(ops) >= 69
    for method, path, op in ops:
        where = f"{method} {path}"
        assert op.get("summary", "").strip(), where
        assert op.get("description", "").strip(), where
        # FastAPI's own summary is the handler's name in title case: `list_tenants` -> "List Tenants",
        # and the operationId is that name + the path with non-word characters as "_" + "_<method>".
        suffix = re.sub(r"\W", "_", path) + "_" + method.lower()
        assert op["operationId"].endswith(suffix), where
        handler = op["operationId"].removesuffix(suffix)
        assert op["summary"] != handler.replace("_", " ").title(), f"{where}: summary not written"
    summaries = Counter(op["summary"] for _, _, op in ops)
    assert [s for s, n in summaries.items() if n > 1] == []
    assert "/docs" not in spec["paths"] and "/openapi.json" not in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"  # the Authorize button


async def test_docs_page_and_assets_are_local(api: httpx.AsyncClient) -> None:
    r = await api.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert re.findall(r"https?://", page) == [], "the page names another origin"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "validatorUrl" in page  # set to null: Swagger UI would send the spec to validator.swagger.io
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert len(urls) == 3 and all(u.startswith("/docs/assets/") for u in urls), urls
    types = {}
    for url in urls:
        asset = await api.get(url)
        assert asset.status_code == 200 and len(asset.content) > 500, url
        types[url.split("?")[0].rsplit("/", 1)[1]] = asset.headers["content-type"].split(";")[0]
    assert types == {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
    }
    assert "url: '/openapi.json'" in page


@pytest.mark.parametrize(
    "name",
    ["index.html", "swagger-initializer.js", "..%2F..%2F__init__.py", "..%2Fswagger-ui.css", "%2Fetc%2Fpasswd", "x"],
)
async def test_only_the_three_assets_are_served(gateway: Gateway, name: str) -> None:
    async with anonymous(gateway) as c:
        r = await c.get(f"/docs/assets/{name}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_docs_need_the_token(gateway: Gateway) -> None:
    async with anonymous(gateway) as c:
        r = await c.get("/openapi.json")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = await c.get("/docs")
        assert r.status_code == 303 and r.headers["location"] == "/docs/login"
        for header in ("Bearer wrong", f"Basic {gateway.admin_token}", f"Bearer {gateway.admin_token}x"):
            assert (await c.get("/openapi.json", headers={"Authorization": header})).status_code == 401
            assert (await c.get("/docs", headers={"Authorization": header})).status_code == 303
        form = await c.get("/docs/login")
        assert form.status_code == 200 and 'name="token"' in form.text and 'type="password"' in form.text
        assert re.findall(r"https?://", form.text) == []
        assert "script-src 'none'" in form.headers["content-security-policy"]
        # the assets are Swagger UI's own files, public: the login page shows the favicon
        assert (await c.get("/docs/assets/favicon-32x32.png")).status_code == 200


async def test_login_sets_a_cookie_that_opens_the_docs_and_nothing_else(gateway: Gateway) -> None:
    async with anonymous(gateway) as c:
        r = await login(c, gateway.admin_token)
        assert r.status_code == 303 and r.headers["location"] == "/docs"
        set_cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
        assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower() and "Path=/" in set_cookie
        assert gateway.admin_token not in set_cookie
        assert (await c.get("/docs")).status_code == 200
        spec = await ok(c.get("/openapi.json"))
        assert spec["info"]["title"] == "mqtt-gateway management API"
        # the cookie is not the admin token: the API itself still wants the bearer header
        assert (await c.get("/v1/tenants")).status_code == 401
        assert (await c.post("/v1/tenants", json={"id": "acme"})).status_code == 401
        assert "Signed in" in (await c.get("/docs/login")).text
        out = await c.post("/docs/logout")
        assert out.status_code == 303 and out.headers["location"] == "/docs/login"
        assert COOKIE not in c.cookies
        assert (await c.get("/openapi.json")).status_code == 401
    async with api_client(gateway) as admin:
        assert await ok(admin.get("/v1/tenants")) == []


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"token": "wrong"}, 401, "wrong token"),
        ({"token": "\x00" * 10}, 401, "wrong token"),
        ({"token": "ü" * 50}, 401, "wrong token"),
        # not a guess (the dashboard's form says the same): no token was given
        ({"token": ""}, 400, "enter the admin token"),
        ({"nothing": "here"}, 400, "enter the admin token"),
    ],
)
async def test_a_wrong_login_sets_no_cookie(gateway: Gateway, form: dict[str, str], status: int, message: str) -> None:
    async with anonymous(gateway) as c:
        r = await c.post("/docs/login", data=form)
        assert r.status_code == status and message in r.text and "set-cookie" not in r.headers
        assert (await c.get("/openapi.json")).status_code == 401


async def test_odd_login_bodies_are_refused_cleanly(gateway: Gateway) -> None:
    async with anonymous(gateway) as c:
        r = await c.post("/docs/login", content="&".join(f"f{i}=x" for i in range(50)))
        assert r.status_code == 400 and "set-cookie" not in r.headers
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post("/docs/login", content=b"\xff\xfe token=\x80", headers=form)
        assert r.status_code == 400 and "not UTF-8" in r.text
        r = await c.post("/docs/login", content=b"token=x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 400 and "login form" in r.text
        r = await c.post("/docs/login", json={"token": gateway.admin_token})  # a form, not JSON
        assert r.status_code == 400 and "set-cookie" not in r.headers
        r = await c.post("/docs/login", content=b"token=" + b"a" * 2_000_000)
        assert r.status_code == 413
        # the token with spaces around it, as pasted from a terminal, is the token
        r = await c.post("/docs/login", data={"token": f"  {gateway.admin_token}\n"})
        assert r.status_code == 303


async def test_forged_cookies_open_nothing(gateway: Gateway) -> None:
    async with anonymous(gateway) as c:
        assert (await login(c, gateway.admin_token)).status_code == 303
        valid = c.cookies[COOKIE]
    async with anonymous(gateway) as dashboard:
        assert (await dashboard.post("/ui/login", data={"token": gateway.admin_token})).status_code == 303
        ui_session = dashboard.cookies[UI_COOKIE]
    forged = [
        "",
        ".",
        "garbage",
        valid[:-1],
        valid + "x",
        "9" * 400 + "." + "a" * 64,  # the old stateless form, expiry.mac
        "²³." + "a" * 64,
        gateway.admin_token,
        ui_session,  # a dashboard session opens the dashboard only
    ]
    async with anonymous(gateway) as c:
        for value in forged:
            cookie = {"Cookie": f"{COOKIE}={value}".encode()}  # bytes: httpx's jar refuses non-ASCII
            assert (await c.get("/openapi.json", headers=cookie)).status_code == 401, value
            assert (await c.get("/docs", headers=cookie)).status_code == 303, value
        assert (await c.get("/openapi.json", headers={"Cookie": f"{COOKIE}={valid}"})).status_code == 200
        # and the other way: a docs session opens no dashboard page
        r = await c.get("/ui/", headers={"Cookie": f"{UI_COOKIE}={valid}"})
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")


async def test_signing_out_ends_the_session(gateway: Gateway) -> None:
    """The finding: the cookie was a stateless HMAC, so a copy of it still opened the docs after sign-out."""
    async with anonymous(gateway) as c:
        assert (await login(c, gateway.admin_token)).status_code == 303
        kept = c.cookies[COOKIE]
        assert (await c.post("/docs/logout")).status_code == 303
    async with anonymous(gateway) as replay:
        cookie = {"Cookie": f"{COOKIE}={kept}"}
        assert (await replay.get("/openapi.json", headers=cookie)).status_code == 401
        r = await replay.get("/docs", headers=cookie)
        assert (r.status_code, r.headers["location"]) == (303, "/docs/login")
        assert "Signed in" not in (await replay.get("/docs/login", headers=cookie)).text


async def test_cross_site_posts_sign_no_one_in_or_out(gateway: Gateway) -> None:
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        async with anonymous(gateway) as c:
            r = await c.post("/docs/login", data={"token": gateway.admin_token}, headers=headers)
            assert r.status_code == 403 and "set-cookie" not in r.headers, headers
            assert "cross-site" in r.text
    async with anonymous(gateway) as c:
        assert (await login(c, gateway.admin_token)).status_code == 303
        r = await c.post("/docs/logout", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        assert (await c.get("/openapi.json")).status_code == 200  # still signed in
        origin = f"http://127.0.0.1:{gateway.ports['api']}"  # the same origin, as a browser sends it
        r = await c.post("/docs/logout", headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303
        assert (await c.get("/openapi.json")).status_code == 401


async def test_the_login_page_lets_the_browser_send_its_origin(gateway: Gateway) -> None:
    """`Referrer-Policy: no-referrer` makes a browser send `Origin: null` with the form, which the
    cross-site check refuses: the admin could not sign in."""
    async with anonymous(gateway) as c:
        for path in ("/docs/login", "/ui/login"):
            policy = (await c.get(path)).headers["referrer-policy"]
            assert policy == "same-origin", (path, policy)


@pytest.mark.gateway_settings(api_docs_public=True)
async def test_public_docs(gateway: Gateway) -> None:
    async with anonymous(gateway) as c:
        spec = await ok(c.get("/openapi.json"))
        assert "/v1/tenants" in spec["paths"]
        r = await c.get("/docs")
        assert r.status_code == 200 and re.findall(r"https?://", r.text) == []
        r = await c.get("/docs/login")
        assert r.status_code == 303 and r.headers["location"] == "/docs"
        # the docs are public; the API is not
        r = await c.post("/v1/tenants", json={"id": "acme"})
        assert r.status_code == 401
