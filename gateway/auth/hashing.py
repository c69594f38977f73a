"""Password hashing with pwdlib + argon2, run in worker threads so the event loop never blocks.

argon2 costs tens of milliseconds of CPU by design; `workers` bounds how many run at once so a
flood of password CONNECTs cannot starve the broker of threads. A CONNECT that would wait for a
worker longer than its deadline is refused without hashing (`HasherBusy`) instead of queueing
behind the flood: at once, before its registry lookup, when the checks already admitted hold a
deadline's worth of argon2 runs (`admission`), or when the deadline passes in the queue (`verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from .slots import Slots, SlotsBusy

HasherBusy = SlotsBusy

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~15 ms here instead of the ~160 ms
# of pwdlib's defaults, which capped password CONNECTs near 14/s. Each hash records its own
# parameters, so hashes made with other settings still verify.


class PasswordHasher:
    def __init__(self, workers: int = 2) -> None:
        self._hash = PasswordHash((Argon2Hasher(memory_cost=19_456, time_cost=2, parallelism=1),))
        self._workers = workers
        self._admitted = 0
        self._admitted_urgent = 0
        # One more worker, for urgent checks alone: a flood's runs under way never delay them.
        self._slots = Slots(workers, express=1)
        started = time.perf_counter()
        # Verified against when the auth-id is unknown, so both paths cost the same time.
        self._decoy = self._hash.hash("decoy password, never matches")
        self._run_seconds = time.perf_counter() - started
        """What one argon2 run takes here, under the current load (a moving average)."""
        self.verifications = 0
        """argon2 verifications run, decoys included."""

    async def hash(self, password: str) -> str:
        async with self._slots.hold():
            return await asyncio.to_thread(self._hash.hash, password)

    async def verify(
        self, password: str, password_hash: str | None, *, deadline: float | None = None, urgent: bool = False
    ) -> bool:
        """False for a wrong password or no hash (the decoy ran); HasherBusy if no worker came free in time.

        `urgent` checks (a returning device's) go before all others, may use one worker more than
        `workers`, and have no deadline: they wait only for the urgent checks ahead, which
        `admission` bounds.
        """
        async with self._slots.hold(deadline=None if urgent else deadline, urgent=urgent):
            self.verifications += 1
            started = time.perf_counter()
            ok = await asyncio.to_thread(self._hash.verify, password, password_hash or self._decoy)
            self._run_seconds = 0.8 * self._run_seconds + 0.2 * (time.perf_counter() - started)
        return ok and password_hash is not None

    @contextlib.contextmanager
    def admission(self, deadline: float | None, *, urgent: bool = False) -> Iterator[None]:
        """Around a password check from before its lookup: HasherBusy at once if the checks admitted
        ahead of it (all of them; for an urgent one, the urgent ones) would keep it waiting past
        `deadline`. It would only time out in the queue, after costing a registry lookup."""
        ahead = self._admitted_urgent if urgent else self._admitted
        if deadline is not None and ahead // self._workers * self._run_seconds > deadline:
            raise HasherBusy
        self._admitted += 1
        self._admitted_urgent += urgent
        try:
            yield
        finally:
            self._admitted -= 1
            self._admitted_urgent -= urgent
