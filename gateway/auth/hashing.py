"""Password hashing with pwdlib + argon2, run in worker threads so the event loop never blocks.

argon2 costs tens of milliseconds of CPU by design; the semaphore bounds how many run at once
so a flood of password CONNECTs cannot starve the broker of threads.
"""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): ~15 ms here instead of the ~160 ms
# of pwdlib's defaults, which capped password CONNECTs near 14/s. Each hash records its own
# parameters, so hashes made with other settings still verify.


class PasswordHasher:
    def __init__(self, workers: int = 2) -> None:
        self._hash = PasswordHash((Argon2Hasher(memory_cost=19_456, time_cost=2, parallelism=1),))
        self._slots = asyncio.Semaphore(workers)
        # Verified against when the auth-id is unknown, so both paths cost the same time.
        self._decoy = self._hash.hash("decoy password, never matches")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        async with self._slots:
            ok = await asyncio.to_thread(self._hash.verify, password, password_hash or self._decoy)
        return ok and password_hash is not None
