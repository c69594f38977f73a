"""Issue 17.1: the admin-token login forms (/ui/login, /docs/login) took ~520 guesses/s unthrottled.

One throttle for both: wrong tokens are counted per source address and over all addresses; a browser
that has logged in before carries a cookie that gives it a budget of its own, so an attacker, from
anywhere and however many addresses, never locks the admin's browser out. Counted in 429s, not time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from http.cookies import SimpleCookie

import httpx
import pytest

from gateway.node.runtime import Gateway
from gateway.ui.admin_login import BROWSER_COOKIE

from .conftest import api_client, ok

LOGINS = ["/ui/login", "/docs/login"]
SMALL = {
    "login_failures_per_address": 2,
    "login_failures_per_browser": 2,
    "login_failures_overall": 5,
    "login_failure_refill_per_minute": 0.5,
    "login_failure_overall_refill_per_minute": 1.0,
}


def client_from(gateway: Gateway, address: str) -> httpx.AsyncClient:
    """A browser at `address` (a loopback address of its own): no Authorization header, only cookies."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{gateway.ports['api']}",
        transport=httpx.AsyncHTTPTransport(local_address=address),
        timeout=10,
    )


async def log_in(client: httpx.AsyncClient, path: str, token: str) -> httpx.Response:
    return await client.post(path, data={"token": token})


async def limits_hit(gateway: Gateway) -> dict[str, int]:
    async with api_client(gateway) as api:
        return dict((await ok(api.get("/v1/metrics")))["limitsHit"])


@pytest.mark.parametrize("path", LOGINS)
async def test_a_thousand_guesses_from_one_address_are_throttled(gateway: Gateway, path: str) -> None:
    async with client_from(gateway, "127.0.0.2") as attacker:
        statuses = Counter()
        retry_after = set()
        for i in range(1000):
            r = await log_in(attacker, path, f"guess-{i}")
            statuses[r.status_code] += 1
            assert "set-cookie" not in r.headers
            if r.status_code == 429:
                retry_after.add(int(r.headers["retry-after"]))
                assert "try again" in r.text
        # 10 wrong tokens per address (login_failures_per_address), one more a 6 s refill
        assert statuses[401] <= 12 and statuses[429] >= 988 and set(statuses) == {401, 429}, statuses
        assert min(retry_after) >= 1
        # the right token from the attacker's own address waits too: it is not checked there
        assert (await log_in(attacker, path, gateway.admin_token)).status_code == 429
    async with client_from(gateway, "127.0.0.3") as admin:  # the admin elsewhere gets in at once
        r = await log_in(admin, path, gateway.admin_token)
        assert r.status_code == 303, r.text
    assert (await limits_hit(gateway))["login_failures_per_address"] >= 988


async def test_a_parallel_flood_counts_in_full_before_its_first_answer(gateway: Gateway) -> None:
    async with client_from(gateway, "127.0.0.2") as attacker:
        replies = await asyncio.gather(*(log_in(attacker, LOGINS[i % 2], f"guess-{i}") for i in range(60)))
    statuses = Counter(r.status_code for r in replies)
    assert statuses[401] <= 11 and statuses[401] + statuses[429] == 60, statuses


async def test_one_throttle_for_both_forms(gateway: Gateway) -> None:
    async with client_from(gateway, "127.0.0.2") as attacker:
        statuses = [(await log_in(attacker, LOGINS[i % 2], "guess")).status_code for i in range(12)]
    assert statuses.count(401) == 10 and statuses[-2:] == [429, 429]


async def test_malformed_forms_are_no_guesses(gateway: Gateway) -> None:
    async with client_from(gateway, "127.0.0.2") as client:
        for path in LOGINS * 20:
            assert (await client.post(path, data={"other": "field"})).status_code == 400
        assert (await log_in(client, "/ui/login", gateway.admin_token)).status_code == 303


@pytest.mark.gateway_settings(**SMALL)
async def test_the_admins_browser_gets_in_from_the_attackers_own_address(gateway: Gateway) -> None:
    """A NAT shared with the attacker: the browser that logged in before has a budget of its own."""
    nat = "127.0.0.4"
    async with client_from(gateway, nat) as admin:
        r = await log_in(admin, "/ui/login", gateway.admin_token)
        assert r.status_code == 303
        cookie = SimpleCookie()
        for header in r.headers.get_list("set-cookie"):
            cookie.load(header)
        morsel = cookie[BROWSER_COOKIE]
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
        assert gateway.admin_token not in morsel.value and len(morsel.value) >= 43
        assert (await admin.post("/ui/logout")).status_code == 303
        async with client_from(gateway, nat) as attacker:
            statuses = [(await log_in(attacker, "/ui/login", f"guess-{i}")).status_code for i in range(20)]
            assert statuses == [401, 401] + [429] * 18
            # a made-up browser cookie is a stranger's: it is counted against the address
            attacker.cookies.set(BROWSER_COOKIE, "x" * 43, path="/")
            assert (await log_in(attacker, "/ui/login", gateway.admin_token)).status_code == 429
        for path in LOGINS:  # the same browser cookie serves both forms
            assert (await log_in(admin, path, gateway.admin_token)).status_code == 303, path
        # the browser's budget is its own: its mistakes are counted, and only against it
        statuses = [(await log_in(admin, "/docs/login", "typo")).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]


@pytest.mark.gateway_settings(**SMALL)
async def test_many_addresses_empty_the_overall_budget_but_not_a_known_browsers(gateway: Gateway) -> None:
    async with client_from(gateway, "127.0.0.5") as admin:
        assert (await log_in(admin, "/docs/login", gateway.admin_token)).status_code == 303
        browser = admin.cookies[BROWSER_COOKIE]
    statuses = []
    for i in range(12):
        async with client_from(gateway, f"127.0.1.{2 + i}") as attacker:
            statuses.append((await log_in(attacker, LOGINS[i % 2], f"guess-{i}")).status_code)
    assert statuses == [401] * 5 + [429] * 7
    async with client_from(gateway, "127.0.2.2") as stranger:  # never logged in: waits until the attack ends
        r = await log_in(stranger, "/ui/login", gateway.admin_token)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    async with client_from(gateway, "127.0.2.3") as moved:  # the admin's browser, from a new address
        moved.cookies.set(BROWSER_COOKIE, browser, path="/")
        assert (await log_in(moved, "/ui/login", gateway.admin_token)).status_code == 303
    assert (await limits_hit(gateway))["login_failures_overall"] == 8


async def test_the_browser_cookie_opens_nothing(gateway: Gateway) -> None:
    async with client_from(gateway, "127.0.0.6") as admin:
        assert (await log_in(admin, "/ui/login", gateway.admin_token)).status_code == 303
        browser = admin.cookies[BROWSER_COOKIE]
    async with client_from(gateway, "127.0.0.6") as other:
        other.cookies.set(BROWSER_COOKIE, browser, path="/")
        assert (await other.get("/ui/")).status_code == 303
        assert (await other.get("/ui/live/")).status_code == 401
        assert (await other.get("/openapi.json")).status_code == 401
        assert (await other.get("/v1/tenants")).status_code == 401


# -- what an attack on the throttle found ------------------------------------------------------------


@pytest.mark.gateway_settings(**SMALL)
async def test_requests_stalling_their_body_hold_no_tokens(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """Tokens taken before the form is read would be held for as long as a client dawdles over its
    body: a few idle connections from a few addresses would empty the shared budget, no guess made.
    And each one hanging up mid-body logged a traceback."""
    stalled = []
    for i in range(12):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.ports["api"], local_addr=(f"127.0.3.{2 + i}", 0)
        )
        writer.write(
            b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 100\r\n\r\ntoken=gu"
        )
        await writer.drain()
        stalled.append(writer)
    try:
        await asyncio.sleep(0.3)
        async with client_from(gateway, "127.0.2.9") as stranger:
            r = await log_in(stranger, "/ui/login", gateway.admin_token)
            assert r.status_code == 303, r.text
    finally:
        for writer in stalled:
            writer.close()
    await asyncio.sleep(0.5)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
