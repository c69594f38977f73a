"""Token buckets: at most `per_minute` events a minute, bursts up to the same number."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    per_minute: int
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.per_minute)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(float(self.per_minute), self.tokens + (now - self.stamp) * self.per_minute / 60.0)
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
