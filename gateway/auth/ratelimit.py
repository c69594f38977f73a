"""Token buckets: `per_minute` events a minute on average, bursts up to `burst` (default: the same number).
A bucket may also meter a quantity known only afterwards (milliseconds spent): `charge` it, into debt
if need be, and admit while it is `in_credit`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    per_minute: float
    burst: float = 0.0
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.burst <= 0:
            self.burst = float(self.per_minute)
        self.tokens = self.burst

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now

    def available(self) -> bool:
        self._refill()
        return self.tokens >= 1.0

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def seconds_until_available(self) -> float:
        """How long until `take` would succeed (0 if now)."""
        self._refill()
        return max(0.0, (1.0 - self.tokens) * 60.0 / self.per_minute)

    def in_credit(self) -> bool:
        self._refill()
        return self.tokens > 0.0

    def charge(self, amount: float) -> None:
        """Takes `amount` after the fact; below zero is a debt the refill pays off first."""
        self._refill()
        self.tokens -= amount

    def seconds_to_credit(self) -> float:
        """How long until `in_credit` (0 when it is)."""
        self._refill()
        return 0.0 if self.tokens > 0.0 else (1e-6 - self.tokens) * 60.0 / self.per_minute

    def give_back(self) -> None:
        """Undoes a `take` whose event did not count after all."""
        self._refill()
        self.tokens = min(self.burst, self.tokens + 1.0)

    def is_full(self) -> bool:
        """A full bucket is as good as a new one: forgetting it loses nothing."""
        self._refill()
        return self.tokens >= self.burst


class TokenBuckets:
    """A bucket per key (a device, a tenant), made on first use. Full buckets are forgotten once
    `sweep_at` keys are held; the next sweep waits until the map has doubled, so a map of busy
    buckets costs each new key O(1) on average, not a scan."""

    def __init__(self, per_minute: float, burst: float = 0.0, *, sweep_at: int = 10_000) -> None:
        self._per_minute = per_minute
        self._burst = burst
        self._min_sweep = self._sweep_at = sweep_at
        self._by_key: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def of(self, key: str) -> TokenBucket:
        bucket = self._by_key.get(key)
        if bucket is None:
            if len(self._by_key) >= self._sweep_at:
                self._by_key = {k: b for k, b in self._by_key.items() if not b.is_full()}
                self._sweep_at = max(self._min_sweep, 2 * len(self._by_key))
            bucket = self._by_key[key] = TokenBucket(self._per_minute, self._burst)
        return bucket
