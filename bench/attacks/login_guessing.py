"""Guessing the admin token at the dashboard's login form from one address while the admin logs in elsewhere.

Four connections from 127.0.0.2 post wrong tokens to /ui/login as fast as answers come; meanwhile the
admin's browser logs in from 127.0.0.3 every 0.5 s. What the attacker got: wrong tokens checked (401)
per second, and refusals before any check (429); what the admin got: the share of logins accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "login guessing"
WHAT = "wrong admin tokens at /ui/login from one address; the admin logs in from another"
ATTACKER, ADMIN = "127.0.0.2", "127.0.0.3"
CONNECTIONS = 4


def _browser(server: Server, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.info['api']}",
        transport=httpx.AsyncHTTPTransport(local_address=address),
        timeout=10,
    )


async def _guess(server: Server, statuses: Counter[int], until: float) -> None:
    async with _browser(server, ATTACKER) as attacker:
        while time.monotonic() < until:
            r = await attacker.post("/ui/login", data={"token": f"guess-{sum(statuses.values())}"})
            statuses[r.status_code] += 1


async def run(server: Server, quick: bool) -> Outcome:
    seconds = 10 if quick else 30
    guesses: Counter[int] = Counter()
    logins: Counter[int] = Counter()
    async with Bystander(server) as watch:
        until = time.monotonic() + seconds
        attack = [asyncio.create_task(_guess(server, guesses, until)) for _ in range(CONNECTIONS)]
        async with _browser(server, ADMIN) as admin:
            while time.monotonic() < until:
                admin.cookies.clear()  # a browser that never logged in here: the address's budget alone
                logins[(await admin.post("/ui/login", data={"token": server.info["admin"]})).status_code] += 1
                await asyncio.sleep(0.5)
        await asyncio.gather(*attack)
    total = sum(logins.values())
    effect = (
        f"{guesses[401] / seconds:.1f} wrong tokens checked/s ({guesses[401]:,}), {guesses[429]:,} refused"
        f" unchecked (429) of {sum(guesses.values()):,}; the admin elsewhere: {logins[303]} of {total} logged in"
    )
    return Outcome(effect, watch.result)
