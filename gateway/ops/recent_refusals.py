"""Refused CONNECTs of the last hour by tenant and reason, for the dashboard: the registry has no
row for a refusal (the device may not exist), and `Metrics.connects_refused` has neither tenant nor time."""

from __future__ import annotations

import time
from collections import Counter, deque

WINDOW_MINUTES = 60
MAX_KEYS_PER_MINUTE = 512
"""(tenant, reason) pairs one minute keeps; past it a refusal counts under OTHER_TENANTS, so a storm of
refusals naming many tenants costs no more memory."""
OTHER_TENANTS = "*"


class RecentRefusals:
    """Per-minute counters, the last 60 minutes: exact counts in bounded memory."""

    def __init__(self) -> None:
        self._minutes: deque[tuple[int, Counter[tuple[str | None, str]]]] = deque(maxlen=WINDOW_MINUTES)

    def add(self, reason: str, tenant_id: str | None, *, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, Counter()))
        counts = self._minutes[-1][1]
        key = (tenant_id, reason)
        if key not in counts and len(counts) >= MAX_KEYS_PER_MINUTE:
            key = (OTHER_TENANTS, reason)
        counts[key] += 1

    def last_hour(self, *, now: float | None = None) -> dict[str | None, Counter[str]]:
        """tenant (None: not known, e.g. an unknown token) -> reason -> refusals in the last 60 minutes."""
        oldest = int((time.time() if now is None else now) // 60) - WINDOW_MINUTES + 1
        totals: dict[str | None, Counter[str]] = {}
        for minute, counts in self._minutes:
            if minute >= oldest:
                for (tenant, reason), n in counts.items():
                    totals.setdefault(tenant, Counter())[reason] += n
        return totals
