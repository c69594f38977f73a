"""Token buckets: `per_minute` events a minute on average, bursts up to `burst` (default: the same number)."""

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

    def give_back(self) -> None:
        """Undoes a `take` whose event did not count after all."""
        self._refill()
        self.tokens = min(self.burst, self.tokens + 1.0)

    def is_full(self) -> bool:
        """A full bucket is as good as a new one: forgetting it loses nothing."""
        self._refill()
        return self.tokens >= self.burst
