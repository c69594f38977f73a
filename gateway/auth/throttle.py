"""Failed-CONNECT budgets, so guessing costs time and no argon2, and costs the guesser, not the owner.

A password attempt reserves a token in the budget of its (username, address) pair before anything is
looked up and, unless that pair logged in before, in its address's, its username's and the node's,
so a parallel flood is counted in full before its first answer (the argon2 queue's admission bounds
how many hold one at a time). A failure keeps the tokens; anything else gives them back. Success
does not refill: a device's own reconnects must not forgive the failures of someone guessing its
password. A token or certificate attempt, answered after one quick lookup, only needs a token in
its address's bucket (none if it connected from there before) and pays it if it fails: tokens held
across the lookups of a burst of good CONNECTs from one NAT would refuse each other.

Memory is bounded: a bucket whose tokens are all back is forgotten at once (a full bucket is as good
as a new one), so only keys with recent failures, or an attempt in flight, take room; past
`max_keys` the least recently used is forgotten early (counted in `forgotten`).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from ..node.settings import GatewaySettings
from .ratelimit import TokenBucket

# At most ~50-130 password failures a second reach argon2 (2 workers), so churning 10,000 usernames
# takes longer than one refill period: forgetting a bucket early forgives nothing the refill would not.
MAX_KEYS = 10_000


class BucketMap:
    """Token buckets by key, least recently used first, at most `max_keys` of them."""

    def __init__(self, name: str, burst: int, per_minute: float, max_keys: int = MAX_KEYS) -> None:
        self.name = name
        """The setting that sizes the buckets, reported when one refuses."""
        self._burst, self._per_minute, self._max_keys = burst, per_minute, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.forgotten = 0
        """Buckets dropped before they refilled: only a flood of distinct keys does that."""

    def __len__(self) -> int:
        return len(self._buckets)

    def available(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        return bucket is None or bucket.available()

    def take(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._per_minute, self._burst)
        else:
            self._buckets.move_to_end(key)
        taken = bucket.take()
        self._prune()
        return taken

    def seconds_until_available(self, key: str) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.seconds_until_available()

    def give_back(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:  # forgotten meanwhile: it counts as full
            return
        bucket.give_back()
        if bucket.is_full():
            del self._buckets[key]

    def _prune(self) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if oldest.is_full():
                self._buckets.popitem(last=False)
            elif len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
                self.forgotten += 1
            else:
                return


def address_key(address: str) -> str:
    """IPv6 clients are counted by /64, the block one subscriber usually gets; IPv4 by address."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Attempt:
    """The tokens one CONNECT holds while its credential is checked, and those it owes if it fails."""

    def __init__(
        self,
        held: list[tuple[BucketMap, str]],
        owed: list[tuple[BucketMap, str]] | None = None,
        throttled_by: str | None = None,
        retry_after: float = 0.0,
    ) -> None:
        self._held, self._owed = held, owed or []
        self.throttled_by = throttled_by
        """None, or the setting whose bucket was empty: the attempt holds nothing and is refused."""
        self.retry_after = retry_after
        """When refused: seconds until that bucket has a token again."""

    def failed(self) -> None:
        """A wrong secret: the tokens stay taken, and those owed are taken."""
        for buckets, key in self._owed:
            buckets.take(key)
        self._held, self._owed = [], []

    def release(self) -> None:
        """Success, or a refusal that was no guess: the tokens go back."""
        for buckets, key in self._held:
            buckets.give_back(key)
        self._held, self._owed = [], []


class AuthThrottle:
    """Four budgets of failures. Whoever sends a username from an address shares that pair's budget;
    the address's, the username's and the node's are drawn from only by pairs that have not logged
    in before (`known`): those are what an attacker can reach, and what a lockout of the owner would
    come from. The pair's budget being smaller than the username's, one address alone never empties
    the username's (settings.py checks it), so its owner gets in from anywhere else."""

    def __init__(
        self,
        *,
        per_username_and_address: int,
        per_username: int,
        per_address: int,
        refill_per_minute: float,
        overall: int,
        overall_per_second: float,
        max_keys: int = MAX_KEYS,
    ):
        self.pairs = BucketMap(
            "auth_failures_per_username_and_address", per_username_and_address, refill_per_minute, max_keys
        )
        self.usernames = BucketMap("auth_failures_per_username", per_username, refill_per_minute, max_keys)
        self.addresses = BucketMap("auth_failures_per_address", per_address, refill_per_minute, max_keys)
        self.overall = BucketMap("auth_failures_overall", overall, overall_per_second * 60, 1)
        """One bucket: every stranger's failed password check on this node, so argon2's CPU is bounded."""

    @classmethod
    def of(cls, settings: GatewaySettings) -> AuthThrottle:
        return cls(
            per_username_and_address=settings.auth_failures_per_username_and_address,
            per_username=settings.auth_failures_per_username,
            per_address=settings.auth_failures_per_address,
            refill_per_minute=settings.auth_failure_refill_per_minute,
            overall=settings.auth_failures_overall,
            overall_per_second=settings.auth_failures_overall_per_second,
        )

    def reserve(self, address: str | None, password_username: str | None, *, known: bool = False) -> Attempt:
        """What an attempt counts against; refused (`throttled_by`), holding nothing, if a bucket is empty.

        `known`: this credential logged in from this address before (and has not failed there since).
        """
        at = address_key(address) if address else None
        if password_username is None:  # a token or a certificate: one quick lookup, paid for if wrong
            owed = [(self.addresses, at)] if at is not None and not known else []
            for buckets, key in owed:
                if not buckets.available(key):
                    return Attempt([], throttled_by=buckets.name)
            return Attempt([], owed=owed)
        # The pair first: once an address has spent its own budget on a username, its attempts take
        # nothing from the budgets it shares with the owner.
        wanted = [(self.pairs, f"{password_username}\0{at}")] if at is not None else []
        if not known:
            wanted += [(self.addresses, at)] if at is not None else []
            wanted += [(self.usernames, password_username), (self.overall, "")]
        return take_all(wanted)


def take_all(wanted: list[tuple[BucketMap, str]]) -> Attempt:
    """A token from each bucket, in order, or none: the first empty one refuses the attempt."""
    held: list[tuple[BucketMap, str]] = []
    for buckets, key in wanted:
        if not buckets.take(key):
            Attempt(held).release()
            return Attempt([], throttled_by=buckets.name, retry_after=buckets.seconds_until_available(key))
        held.append((buckets, key))
    return Attempt(held)
