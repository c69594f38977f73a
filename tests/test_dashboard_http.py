"""Issue 11.3, the dashboard without a browser: who gets in (nobody without the session the admin token
opens), its cookie, what it counts, and that hostile names are shown as text."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from starlette.requests import Request

from gateway.api.app import create_app
from gateway.node.runtime import Gateway
from gateway.ops.recent_refusals import MAX_KEYS_PER_MINUTE, OTHER_TENANTS, RecentRefusals
from gateway.ui import views
from gateway.ui.sessions import COOKIE, UI, Sessions
from registry.models import now_ms
from registry.recent import first_id_since

from .conftest import connect_refused, make_device, mqtt, ok, wait_until
from .pki_helpers import device_tls, make_ca, make_device_cert, trust

NOT_AUTHORIZED = 135  # CONNACK 5, as aiomqtt reports it
HOSTILE = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


def browser(gateway: Gateway, **headers: str) -> httpx.AsyncClient:
    """No Authorization header: a browser has only its cookies."""
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.ports['api']}", headers=headers, timeout=10)


@contextlib.asynccontextmanager
async def logged_in(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(gateway) as client:
        r = await client.post("/ui/login", data={"token": gateway.admin_token})
        assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text
        yield client


def set_cookie(response: httpx.Response) -> SimpleCookie:
    """Every Set-Cookie header of the response (a login also sets the browser cookie)."""
    cookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie


def ui_routes(gateway: Gateway) -> list[tuple[str, str]]:
    """(method, path with its parameters filled) of every /ui route the app has, so a route added
    later without the guard fails here."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps an included router whole
                walk(route.original_router.routes)
            elif getattr(route, "path", "").startswith("/ui"):
                path = route.path.replace("{tenant}", "acme").replace("{device}", "dev-1")
                found.extend((method, path) for method in sorted(route.methods - {"HEAD"}))

    walk(create_app(gateway, gateway.admin_token).routes)
    return found


# -- access ----------------------------------------------------------------------------------------------


async def test_without_a_session_every_ui_route_is_refused(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "dev-1")
    routes = ui_routes(gateway)
    public = {("GET", "/ui/login"), ("POST", "/ui/login"), ("POST", "/ui/logout"), ("GET", "/ui/static/{name}")}
    guarded = [r for r in routes if r not in public]
    assert {p for _, p in guarded} >= {"/ui/", "/ui/tenants/acme", "/ui/tenants/acme/devices/dev-1", "/ui/live/"}
    forged = {"": None, "random": "x" * 43, "the admin token itself": gateway.admin_token}
    for what, value in forged.items():
        async with browser(gateway) as client:
            if value is not None:
                client.cookies.set(COOKIE, value, path="/ui")
            for method, path in guarded:
                r = await client.request(method, path)
                if path.startswith("/ui/live"):
                    assert r.status_code == 401, (what, path, r.text)
                else:
                    assert (r.status_code, r.headers.get("location")) == (303, "/ui/login"), (what, path)
                assert "dev-1" not in r.text and "acme" not in r.text, (what, path)
    # the API's bearer token opens /v1, not the dashboard: the dashboard is cookie-only
    r = await api.get("/ui/tenants/acme", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/ui/login")


async def test_a_session_opens_every_page_and_live_region(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "dev-1")
    async with logged_in(gateway) as client:
        for method, path in ui_routes(gateway):
            if method == "GET" and "{name}" not in path and path != "/ui/login":
                r = await client.get(path)
                assert r.status_code == 200, (path, r.text)
                assert r.headers["content-type"].startswith("text/html")
                assert "script-src 'self'" in r.headers["content-security-policy"]
                assert r.headers["cache-control"] == "no-store"
        r = await client.get("/ui/login")  # already in: the login page sends you on
        assert (r.status_code, r.headers["location"]) == (303, "/ui/")


async def test_wrong_or_malformed_logins_open_no_session(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        attempts = [
            ({"data": {"token": "guess-123"}}, 401, "wrong token"),
            ({"data": {"token": gateway.admin_token + "x"}}, 401, "wrong token"),
            ({"data": {"token": ""}}, 400, "enter the admin token"),
            ({"data": {"other": gateway.admin_token}}, 400, "enter the admin token"),
            ({"data": {"token": [gateway.admin_token, gateway.admin_token]}}, 400, "enter the admin token"),
            ({"json": {"token": gateway.admin_token}}, 400, "login form"),
            (
                {"content": b"token=\xff\xfe", "headers": {"content-type": "application/x-www-form-urlencoded"}},
                400,
                "not UTF-8",
            ),
        ]
        for kwargs, status, message in attempts:
            r = await client.post("/ui/login", **kwargs)  # type: ignore[arg-type]
            assert r.status_code == status and message in r.text, (kwargs, r.status_code, r.text)
            assert "set-cookie" not in r.headers
            assert "guess-123" not in r.text and gateway.admin_token not in r.text  # nothing is echoed
        r = await client.post(f"/ui/login?token={gateway.admin_token}")  # not from the query string either
        assert r.status_code == 400 and "set-cookie" not in r.headers
        assert (await client.get("/ui/")).status_code == 303


async def test_the_session_cookie(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        r = await client.post("/ui/login", data={"token": gateway.admin_token})
        morsel = set_cookie(r)[COOKIE]
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/ui"
        assert not morsel["secure"]  # plain HTTP: a Secure cookie would never come back
        assert gateway.admin_token not in r.headers["set-cookie"] and len(morsel.value) >= 43
    # behind a TLS proxy on loopback (X-Forwarded-Proto is trusted from 127.0.0.1 only): Secure
    async with browser(gateway, **{"X-Forwarded-Proto": "https"}) as client:
        r = await client.post("/ui/login", data={"token": gateway.admin_token})
        assert r.status_code == 303 and set_cookie(r)[COOKIE]["secure"]
    # two logins, two sessions
    async with logged_in(gateway) as one, logged_in(gateway) as two:
        assert one.cookies[COOKIE] != two.cookies[COOKIE]


async def test_logout_ends_the_session(gateway: Gateway) -> None:
    async with logged_in(gateway) as client:
        session = client.cookies[COOKIE]
        r = await client.post("/ui/logout")
        assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
        assert 'gateway_ui=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    async with browser(gateway) as replay:  # the old cookie, kept by someone: worth nothing now
        replay.cookies.set(COOKIE, session, path="/ui")
        assert (await replay.get("/ui/")).status_code == 303
        assert (await replay.get("/ui/live/")).status_code == 401


async def test_cross_site_posts_log_no_one_in_or_out(gateway: Gateway) -> None:
    async with browser(gateway, Origin="https://evil.example") as client:
        r = await client.post("/ui/login", data={"token": gateway.admin_token})
        assert r.status_code == 403 and "set-cookie" not in r.headers
    async with browser(gateway, **{"Sec-Fetch-Site": "cross-site"}) as client:
        r = await client.post("/ui/login", data={"token": gateway.admin_token})
        assert r.status_code == 403 and "set-cookie" not in r.headers
    async with logged_in(gateway) as client:
        r = await client.post("/ui/logout", headers={"Origin": "null"})
        assert r.status_code == 403
        assert (await client.get("/ui/")).status_code == 200  # still logged in
        # the same origin, as a browser sends it, is fine
        origin = f"http://127.0.0.1:{gateway.ports['api']}"
        r = await client.post("/ui/logout", headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 303


async def test_sessions_are_bounded_and_expire() -> None:
    def request(session_id: str) -> Request:
        return Request({"type": "http", "headers": [(b"cookie", f"{COOKIE}={session_id}".encode())]})

    sessions = Sessions(max_sessions=3)
    opened = [sessions.open(UI) for _ in range(4)]
    assert len(sessions) == 3
    assert [sessions.valid(request(s), UI) for s in opened] == [False, True, True, True]
    short = Sessions(lifetime_s=0.05)
    session = short.open(UI)
    assert short.valid(request(session), UI)
    await wait_until(lambda: _false(short.valid(request(session), UI)))


async def _false(value: bool) -> bool:
    return not value


async def test_static_assets_need_no_session_and_hold_no_data(gateway: Gateway) -> None:
    async with browser(gateway) as client:
        css = await client.get("/ui/static/dashboard.css")
        js = await client.get("/ui/static/dashboard.js")
        assert css.status_code == js.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert js.headers["content-type"].startswith("text/javascript") and "setInterval" in js.text
        for name in ("../templates/base.html", "dashboard.py", "%2e%2e%2f__init__.py", "nope.css"):
            assert (await client.get(f"/ui/static/{name}")).status_code == 404, name


# -- what it shows ---------------------------------------------------------------------------------------


async def test_hostile_names_are_shown_as_text(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await make_device(api, "acme", "dev-1")
    await ok(api.patch("/v1/tenants/acme/devices/dev-1", json={"attributes": {"note": HOSTILE}}))
    await ok(api.put("/v1/tenants/acme/devices/dev-1/metadata", json={"label": HOSTILE}))
    await ok(trust(api, "acme", make_ca(tmp_path, HOSTILE, stem="hostile")), 201)
    async with mqtt(gateway, token, client_id=HOSTILE):
        pass
    async with logged_in(gateway) as client:
        for path in (
            "/ui/tenants/acme",
            "/ui/live/tenants/acme",
            "/ui/tenants/acme/devices/dev-1",
            "/ui/live/tenants/acme/devices/dev-1",
        ):
            html = (await client.get(path)).text
            assert "<script>alert" not in html, path
        device = (await client.get("/ui/tenants/acme/devices/dev-1")).text
        assert device.count(ESCAPED) == 3  # attribute, metadata (JSON text), client id in the log
        tenant = (await client.get("/ui/tenants/acme")).text
        assert "CN=\\&lt;script\\&gt;alert(" in tenant  # the CA's subject (RFC 4514 escapes <, > and ")
        # a hostile search is text too, in the form and in the live region's URL
        page = (await client.get("/ui/tenants/acme", params={"q": HOSTILE})).text
        assert "<script>alert" not in page and 'value="&lt;script&gt;' in page


async def test_bad_filters_and_unknown_names_are_clear_errors(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "dev-1")
    async with logged_in(gateway) as client:
        cases = {
            "/ui/tenants/acme?state=bogus": (400, "state: one of"),
            "/ui/tenants/acme?connected=maybe": (400, "connected: yes, no"),
            "/ui/tenants/acme?group=a%20b": (400, "group: not a valid id"),
            f"/ui/tenants/acme?q={'x' * 129}": (400, "q: at most 128"),
            "/ui/live/tenants/acme?after=..%2F": (400, "after: not a valid id"),
            "/ui/tenants/nope": (404, "tenant &#39;nope&#39; not found"),
            "/ui/tenants/acme/devices/nope": (404, "not found"),
            "/ui/live/tenants/acme/devices/nope": (404, "not found"),
            "/ui/tenants/acme?unknown=1&q=dev": (200, "dev-1"),
        }
        for path, (status, text) in cases.items():
            r = await client.get(path)
            assert r.status_code == status and text in r.text, (path, r.status_code, r.text)


async def test_the_device_table_searches(gateway: Gateway, api: httpx.AsyncClient) -> None:
    token = await make_device(api, "acme", "kettle-1")
    await make_device(api, "acme", "kettle-2")
    await make_device(api, "acme", "lamp-1")
    await ok(api.post("/v1/tenants/acme/groups", json={"id": "kitchen"}), 201)
    await ok(api.patch("/v1/tenants/acme/devices/kettle-2", json={"group": "kitchen"}))
    async with logged_in(gateway) as client:

        async def shown(**params: str) -> list[str]:
            html = (await client.get("/ui/live/tenants/acme", params=params)).text
            return re.findall(r'<tr data-device="([^"]+)"', html)

        assert await shown() == ["kettle-1", "kettle-2", "lamp-1"]
        assert await shown(q="kettle") == ["kettle-1", "kettle-2"]
        assert await shown(group="kitchen") == ["kettle-2"]
        assert await shown(state="provisioned") == []
        async with mqtt(gateway, token):
            assert await shown(connected="yes") == ["kettle-1"]
            assert await shown(connected="no", q="k") == ["kettle-2"]


async def test_last_hour_by_reason_and_connected_now(gateway: Gateway, api: httpx.AsyncClient, tmp_path: Path) -> None:
    token = await make_device(api, "acme", "dev-1")
    other = await make_device(api, "other", "dev-9")
    spare = "spare-1-Qw8Zr2Lk5Tm1Xc4V"  # a chosen token must be strong (issue 17)
    await ok(api.post("/v1/tenants/acme/devices/dev-1/tokens", json={"token": spare}), 201)
    await ok(api.patch(f"/v1/tenants/acme/devices/dev-1/tokens/{spare}", json={"state": "suspended"}))
    for _ in range(2):
        async with mqtt(gateway, token):
            pass
    async with mqtt(gateway, other):
        assert await connect_refused(gateway, spare) == NOT_AUTHORIZED  # acme's: a suspended token
        assert await connect_refused(gateway, "nobody's-token") == NOT_AUTHORIZED  # no tenant
        ca = make_ca(tmp_path, "Acme CA")
        await ok(trust(api, "acme", ca, autoProvisioningEnabled=True), 201)
        device = make_device_cert(tmp_path, ca, "k-7")
        async with aiomqtt.Client("localhost", gateway.ports["mqtts"], tls_context=device_tls(gateway, device)):
            pass
        acme = await views.tenant_view(gateway, "acme", views.DeviceFilters())
        assert acme.connected == 0
        assert acme.hour.connects == 3 and acme.hour.disconnects == {"client_disconnect": 3}
        assert acme.hour.refusals == {"credential_suspended": 1}
        assert [p.device_id for p in acme.provisioned] == ["k-7"] and acme.provisioned_count == 1
        assert [ca.subject_dn for ca in acme.trusted_cas] == ["CN=Acme CA"]
        overview = await views.overview(gateway)
        rows = {row.tenant.id: row for row in overview.tenants}
        assert (rows["acme"].connected, rows["other"].connected) == (0, 1)
        assert rows["other"].hour.connects == 1 and rows["other"].hour.refusals == {}
        assert overview.unattributed_refusals == {"unknown_credential": 1}
    async with logged_in(gateway) as client:
        html = (await client.get("/ui/live/tenants/acme")).text
        assert re.search(r'<span class="reason">client_disconnect</span> <b>3</b>', html)
        assert re.search(r'<span class="reason">credential_suspended</span> <b>1</b>', html)
        assert "k-7" in html


async def test_the_hour_window_leaves_older_rows_out(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "dev-1")
    db = gateway.registry.db
    assert await first_id_since(db, "outbox", 0) >= 0  # whatever the outbox holds
    now = now_ms()
    for at in (now - 3 * 3_600_000, now - 2 * 3_600_000, now - 60_000, now - 1000):
        await db.write(
            "INSERT INTO connection_log (tenant_id, device_id, at, event, reason) VALUES"
            " ('acme', 'dev-1', ?, 'disconnected', 'old_or_new') RETURNING id",
            (at,),
        )
    activity = await gateway.registry.connections.activity_since(now - 3_600_000, "acme")
    assert [(a.event, a.reason, a.count) for a in activity] == [("disconnected", "old_or_new", 2)]
    assert await gateway.registry.connections.activity_since(now + 1000) == []


def test_recent_refusals_keep_one_hour_in_bounded_memory() -> None:
    refusals = RecentRefusals()
    start = time.time()
    refusals.add("bad_password", "acme", now=start - 3700)  # over an hour ago
    refusals.add("bad_password", "acme", now=start - 60)
    refusals.add("unknown_credential", None, now=start)
    assert refusals.last_hour(now=start) == {"acme": {"bad_password": 1}, None: {"unknown_credential": 1}}
    for i in range(MAX_KEYS_PER_MINUTE + 100):  # a storm naming many tenants in one minute
        refusals.add("bad_password", f"t{i}", now=start)
    hour = refusals.last_hour(now=start)
    assert len(hour) <= MAX_KEYS_PER_MINUTE + 2
    assert sum(c.total() for c in hour.values()) == 2 + MAX_KEYS_PER_MINUTE + 100
    assert hour[OTHER_TENANTS]["bad_password"] > 0


@pytest.mark.gateway_settings(tls_enabled=False)
async def test_without_tls_the_dashboard_still_works(gateway: Gateway, api: httpx.AsyncClient) -> None:
    await make_device(api, "acme", "dev-1")
    async with logged_in(gateway) as client:
        assert "No trusted CA" in (await client.get("/ui/tenants/acme")).text
