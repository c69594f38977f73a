"""How fast one device may write its metadata (10/EPMP): a token bucket per device, all its sessions
together, so a device cannot fill the registry (each write is a row and an event) by writing faster."""

from __future__ import annotations

from ..auth.identity import DeviceIdentity, owner_key
from ..auth.ratelimit import TokenBucket

_SWEEP_AT = 10_000
"""Buckets kept before the full ones (as good as new) are forgotten."""


class WriteRate:
    def __init__(self, per_second: float, burst: int) -> None:
        self._per_minute = per_second * 60
        self._burst = float(burst)
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, identity: DeviceIdentity) -> bool:
        owner = owner_key(identity)
        bucket = self._buckets.get(owner)
        if bucket is None:
            if len(self._buckets) >= _SWEEP_AT:
                self._buckets = {k: b for k, b in self._buckets.items() if not b.is_full()}
            bucket = self._buckets[owner] = TokenBucket(self._per_minute, self._burst)
        return bucket.take()
