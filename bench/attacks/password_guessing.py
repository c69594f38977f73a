"""Guessing a known username's password over MQTT from one address while its owner connects from another.

The attacker sends wrong passwords for `pw@bench` from 127.0.0.2 as fast as answers come (a new socket
each, paced at most ~200 a second so the ports' TIME_WAIT does not run out); meanwhile the owners, the
device `pw@bench` and the service account `app@bench`, connect with the right passwords from 127.0.0.3,
one CONNECT every 0.25 s. What the attacker got: how many guesses argon2 checked (the gateway's
`bad_password` count) and the replies (CONNACK 5 refused, 3 retry later); what each owner got: the
share accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import httpx

from tests.wire import RawClient, connect_packet

from ..server_process import Server
from . import Outcome
from .bystander import Bystander

NAME = "password guessing"
WHAT = "wrong passwords for a known username from one address; its owners connect from another"
ATTACKER, OWNER = "127.0.0.2", "127.0.0.3"


async def connack(port: int, address: str, username: str, password: str) -> int | None:
    """The CONNACK return code, or None when the socket closed (or stayed silent 10 s) without one."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    except OSError:
        return None
    raw = RawClient(reader, writer)
    try:
        await raw.send(connect_packet("guess", username, password))
        reply = await raw.read_packet(timeout=10)
        return reply[3] if reply is not None and len(reply) == 4 else None
    except (TimeoutError, ConnectionError):
        return None
    finally:
        await raw.close()


async def _guess(port: int, username: str, codes: Counter[int | None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        codes[await connack(port, ATTACKER, username, f"guess-{sum(codes.values())}")] += 1
        await asyncio.sleep(0.005)


async def _refused(server: Server) -> dict[str, int]:
    """The gateway's CONNACK refusals by reason: `bad_password` ones ran argon2."""
    headers = {"Authorization": f"Bearer {server.info['admin']}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.info['api']}", headers=headers) as api:
        return dict((await api.get("/v1/metrics")).json()["connectsRefused"])


async def run(server: Server, quick: bool) -> Outcome:
    port, seconds = server.info["mqtt"], 10 if quick else 30
    info = server.info
    owners = [(info["password_user"], info["password"]), (info["app_user"], info["app_password"])]
    guesses: Counter[int | None] = Counter()
    owned = {username: Counter[int | None]() for username, _ in owners}
    stop = asyncio.Event()
    async with Bystander(server) as watch:
        attack = asyncio.create_task(_guess(port, info["password_user"], guesses, stop))
        await asyncio.sleep(2)  # the attacker has used up whatever budget it had
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            username, password = owners[i % 2]
            owned[username][await connack(port, OWNER, username, password)] += 1
            i += 1
            await asyncio.sleep(0.25)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await attack
    refused = await _refused(server)
    shares = "; ".join(
        f"{username} {codes[0]} of {sum(codes.values())} accepted (else {_codes(codes, exclude=0)})"
        for username, codes in owned.items()
    )
    sent = sum(guesses.values())
    effect = (
        f"owners: {shares}. Attacker: {sent:,} guesses ({sent / (seconds + 2):.0f}/s),"
        f" {refused.get('bad_password', 0):,} checked by argon2; replies {_codes(guesses, exclude=-1)}"
    )
    return Outcome(effect, watch.result)


def _codes(counts: Counter[int | None], exclude: int) -> str:
    rest = {code: n for code, n in counts.items() if code != exclude and n}
    named = [f"{n:,} x {'no answer' if code is None else f'CONNACK {code}'}" for code, n in rest.items()]
    return ", ".join(named) or "none"
