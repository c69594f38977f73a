"""Issue 17.5: guessing a username's password costs the guesser, not the owner.

The throttle keeps a budget per username *and* address, so one address hammering a username uses up
its own budget and never the owner's; the username's budget (shared by every address) and the node's
(argon2 CPU) are drawn from only by addresses that have not logged in with that credential before.
A throttled CONNECT gets CONNACK 3 (retry later), not 5 (which clients take as final).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.auth.credentials import ConnectCredentials, verifier_chain
from gateway.auth.outcome import AuthOutcome, Refusal
from gateway.auth.plugin import guarded_authenticate
from gateway.node.runtime import Gateway

from .conftest import api_client, make_device, ok
from .test_password_throttle import ACCEPTED, BUSY, REFUSED, password_user, reply_to_connect, running
from .wire import connect_packet

OWNER = "127.0.0.3"
ATTACKER = "127.0.0.2"


async def connack(gw: Gateway, address: str, username: str, password: str | None = None) -> bytes | None:
    return await reply_to_connect(gw.ports["mqtt"], address, connect_packet("c", username, password))


@contextlib.asynccontextmanager
async def hammering(gw: Gateway, address: str, username: str) -> AsyncIterator[list[bytes | None]]:
    """Wrong passwords for `username` from `address`, one after another, for as long as the body runs
    (at most ~200 a second: a new socket each, and each leaves a port in TIME_WAIT)."""
    replies: list[bytes | None] = []
    stop = asyncio.Event()

    async def guess() -> None:
        # a flag as well as the cancel: Python 3.11's asyncio.wait_for (in RawClient.read_packet) can
        # swallow a cancellation that lands as its read completes, and the loop then never ended
        while not stop.is_set():
            replies.append(await connack(gw, address, username, f"guess-{len(replies)}"))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(guess())
    try:
        yield replies
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def metrics(gw: Gateway) -> dict[str, dict[str, int]]:
    async with api_client(gw) as api:
        return await ok(api.get("/v1/metrics"))  # type: ignore[no-any-return]


async def wait_for(replies: list[bytes | None], count: int) -> None:
    async with asyncio.timeout(30):
        while len(replies) < count:
            await asyncio.sleep(0.02)


async def test_the_owner_gets_in_from_another_address_while_one_address_hammers(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """The finding: after 11 wrong passwords from one address, the device and a service account with
    the right password from other addresses got 0 of 20 accepted (all CONNACK 5, `auth_throttled`)."""
    device, device_password = await password_user(api, "device")
    account = await ok(api.post("/v1/tenants/acme/service-accounts", json={"id": "analytics"}), 201)
    owners = [(device, device_password), (str(account["username"]), str(account["password"]))]
    for username, password in owners:
        async with hammering(gateway, ATTACKER, username) as guesses:
            await wait_for(guesses, 11)
            verified = gateway.services.hasher.verifications
            replies = [await connack(gateway, OWNER, username, password) for _ in range(20)]
            assert replies == [ACCEPTED] * 20, (username, replies)
            # the owner's 20 logins ran argon2; the guesses meanwhile did not
            assert gateway.services.hasher.verifications - verified == 20
            await wait_for(guesses, len(guesses) + 5)  # still hammering, still refused
        # The attacker's own budget (auth_failures_per_username_and_address, 5) was spent on the first
        # guesses; every later one was told to come back (CONNACK 3), not that it is not authorized.
        settled = guesses[:-1]  # the last may have been cut short
        assert settled[:5] == [REFUSED] * 5 and set(settled[5:]) == {BUSY}, settled
    found = await metrics(gateway)
    assert found["limitsHit"]["auth_failures_per_username_and_address"] == found["connectsRefused"]["auth_throttled"]
    assert found["connectsRefused"]["bad_password"] == 10  # 5 guesses each at two usernames
    assert "auth_failures_per_username" not in found["limitsHit"]


async def test_a_throttled_connect_gets_connack_3_and_no_argon2(gateway: Gateway, api: httpx.AsyncClient) -> None:
    username, _ = await password_user(api, "device")
    assert [await connack(gateway, ATTACKER, username, "wrong") for _ in range(5)] == [REFUSED] * 5
    verified = gateway.services.hasher.verifications
    assert await connack(gateway, ATTACKER, username, "wrong") == BUSY
    assert gateway.services.hasher.verifications == verified


async def test_many_addresses_guessing_one_username_leave_its_known_address_open(tmp_path: Path) -> None:
    """A distributed guesser empties the username's shared budget: addresses the owner has logged in
    from still get in; a new address is told to retry later (CONNACK 3), unhashed."""
    buckets = {"auth_failures_per_username": 4, "auth_failures_per_username_and_address": 2}
    async with running(tmp_path, **buckets, auth_failure_refill_per_minute=1.0) as gw:
        async with api_client(gw) as api:
            username, password = await password_user(api, "device")
        assert await connack(gw, OWNER, username, password) == ACCEPTED  # it has logged in from here
        guesses = [await connack(gw, f"127.0.1.{2 + i}", username, "wrong") for i in range(10)]
        assert guesses == [REFUSED] * 4 + [BUSY] * 6
        verified = gw.services.hasher.verifications
        assert await connack(gw, "127.0.0.9", username, password) == BUSY  # a stranger, even with it
        assert gw.services.hasher.verifications == verified
        assert [await connack(gw, OWNER, username, password) for _ in range(5)] == [ACCEPTED] * 5
        found = await metrics(gw)
        assert found["limitsHit"] == {"auth_failures_per_username": 7}


async def test_a_guesser_behind_a_shared_address_does_not_lock_out_the_devices_known_there(tmp_path: Path) -> None:
    """A NAT: an attacker behind it empties the address's budget with guesses at many usernames; the
    devices that have connected from that address before (by token or password) still get in."""
    async with running(tmp_path, auth_failures_per_address=6, auth_failure_refill_per_minute=1.0) as gw:
        async with api_client(gw) as api:
            token = await make_device(api, device="tok-1")
            stranger_token = await make_device(api, device="tok-2")
            username, password = await password_user(api, "device")
        nat = "127.0.0.5"
        assert await connack(gw, nat, token) == ACCEPTED
        assert await connack(gw, nat, username, password) == ACCEPTED
        guesses = [await connack(gw, nat, f"nobody{i}@acme", "guess") for i in range(10)]
        assert guesses == [REFUSED] * 6 + [BUSY] * 4
        assert await connack(gw, nat, token) == ACCEPTED
        assert await connack(gw, nat, username, password) == ACCEPTED
        # a device that never connected from there is a stranger to it: told to retry, not refused
        assert await connack(gw, nat, stranger_token) == BUSY
        assert await connack(gw, "127.0.0.6", stranger_token) == ACCEPTED


async def test_a_guesser_behind_the_owners_own_address_throttles_the_owner_there_only(tmp_path: Path) -> None:
    """The chosen rule for a NAT shared by the owner and someone guessing the owner's own password:
    nothing but the password tells them apart, so they share that address's budget for the username.
    The owner is told to retry (CONNACK 3) there, and gets in from anywhere else."""
    buckets = {"auth_failures_per_username": 4, "auth_failures_per_username_and_address": 2}
    async with running(tmp_path, **buckets, auth_failure_refill_per_minute=1.0) as gw:
        async with api_client(gw) as api:
            username, password = await password_user(api, "device")
        nat = "127.0.0.7"
        assert await connack(gw, nat, username, password) == ACCEPTED
        assert [await connack(gw, nat, username, "wrong") for _ in range(3)] == [REFUSED, REFUSED, BUSY]
        assert await connack(gw, nat, username, password) == BUSY
        assert await connack(gw, "127.0.0.8", username, password) == ACCEPTED


async def test_the_node_bounds_the_argon2_work_of_guesses_from_many_addresses(tmp_path: Path) -> None:
    """Every address and username new: only the node-wide budget (`auth_failures_overall`) holds them.
    A device that has logged in from its address before still gets in meanwhile."""
    settings = {"auth_failures_overall": 8, "auth_failures_overall_per_second": 0.01, "auth_failures_per_address": 4}
    async with running(tmp_path, **settings, auth_failure_refill_per_minute=0.5) as gw:
        async with api_client(gw) as api:
            username, password = await password_user(api, "device")
        assert await connack(gw, OWNER, username, password) == ACCEPTED
        verified = gw.services.hasher.verifications
        guesses = [await connack(gw, f"127.0.{2 + i // 2}.{10 + i}", f"nobody{i}@acme", "guess") for i in range(32)]
        assert gw.services.hasher.verifications - verified == 8
        assert guesses == [REFUSED] * 8 + [BUSY] * 24
        assert await connack(gw, OWNER, username, password) == ACCEPTED
        assert await connack(gw, "127.0.9.9", username, password) == BUSY
        found = await metrics(gw)
        assert found["limitsHit"] == {"auth_failures_overall": 25}


# -- what an attack on the throttle found ------------------------------------------------------------


async def test_a_flood_of_throttled_connects_is_one_log_line_and_a_count(
    gateway: Gateway, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Throttled refusals are what a guesser gets by the thousand, cheaply: one line each would be
    a disk-filling flood of its own."""
    username, _ = await password_user(api, "device")
    for _ in range(5):
        await connack(gateway, ATTACKER, username, "wrong")
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        replies = [await connack(gateway, ATTACKER, username, "wrong") for _ in range(100)]
    assert replies == [BUSY] * 100
    lines = [r.getMessage() for r in caplog.records if "reason=auth_throttled" in r.getMessage()]
    assert len(lines) == 1 and "remote=127.0.0.2:" in lines[0], lines
    assert (await metrics(gateway))["connectsRefused"]["auth_throttled"] == 100


async def test_the_addresses_of_one_ipv6_64_are_one_place_to_the_memory_of_logins(
    gateway: Gateway, api: httpx.AsyncClient
) -> None:
    """A device with one good token and a /64 (2^64 addresses) could otherwise push every other
    credential out of the bounded memory of who logged in from where; and a device whose address
    changes within its /64 (privacy addresses) is still the one that logged in there."""
    token = await make_device(api, device="roamer")
    other = await make_device(api, device="other")
    services = gateway.services
    chain = verifier_chain(services)

    async def attempt(username: str, address: str) -> AuthOutcome:
        credentials = ConnectCredentials(username=username, password=None, certificate=None, address=address)
        return await guarded_authenticate(services, chain, credentials)

    remembered = len(services.recent_logins)
    for i in range(1000):
        assert (await attempt(token, f"2001:db8:1:2::{i:x}")).identity is not None
    assert len(services.recent_logins) == remembered + 1
    # its /64 guesses tokens until the address's budget is spent; the device that connected from it
    # before gets in from a new address there, one that did not is told to retry
    for i in range(100):
        assert (await attempt(f"guess-{i}", f"2001:db8:1:2::{i:x}:1")).refusal == Refusal.UNKNOWN_CREDENTIAL
    assert (await attempt("guess-x", "2001:db8:1:2::ffff")).refusal == Refusal.THROTTLED
    assert (await attempt(token, "2001:db8:1:2:aaaa::1")).identity is not None
    assert (await attempt(other, "2001:db8:1:2:aaaa::1")).refusal == Refusal.THROTTLED
    assert (await attempt(other, "2001:db8:1:3::1")).identity is not None
