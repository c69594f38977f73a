"""Password logins that succeeded recently, by (username, address): theirs go first in the argon2 queue.

The queue's deadline keeps a flood from delaying anyone by more than a deadline, but it cannot tell
one legitimate first attempt from 150 bogus ones: with 150 arriving at once, a few get a worker and
the rest are refused. A device reconnecting from where it last succeeded can be told apart, so it
waits only for the argon2 runs already under way. Only a success adds a pair and the first failure
forgets it, so guessing cannot get in; at most `max_pairs` are kept (least recently used go first),
as keyed 64-bit digests, not the usernames.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

MAX_PAIRS = 100_000


class RecentLogins:
    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        self._max_pairs = max_pairs
        self._key = secrets.token_bytes(16)
        self._pairs: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pairs)

    def _digest(self, username: str, address: str | None) -> bytes:
        pair = f"{username}\0{address or ''}".encode("utf-8", "surrogatepass")
        return hashlib.blake2b(pair, key=self._key, digest_size=8).digest()

    def knows(self, username: str, address: str | None) -> bool:
        return self._digest(username, address) in self._pairs

    def succeeded(self, username: str, address: str | None) -> None:
        digest = self._digest(username, address)
        self._pairs[digest] = None
        self._pairs.move_to_end(digest)
        if len(self._pairs) > self._max_pairs:
            self._pairs.popitem(last=False)

    def failed(self, username: str, address: str | None) -> None:
        self._pairs.pop(self._digest(username, address), None)
