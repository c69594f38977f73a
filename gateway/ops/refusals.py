"""Refusals counted, not written one by one: a flood of unauthenticated API writes or of refused MQTT
invocations becomes one audit row per source, actor, status and minute (`GET /v1/audit/refusals`)
and one log line when its minute is over, however many requests it held.

At most `sources_per_minute` sources of an origin are counted apart in one minute; past them, a
minute's others are counted together as `(other addresses)` or `(other accounts)`, so many
addresses make a few rows more, not one each. Counts reach the registry every FLUSH_EVERY_S seconds,
when the refusals are read and at stop: a kill -9 loses at most the last seconds' counts."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from registry import Registry
from registry.audit import RefusalCount, bounded
from registry.models import from_ms, now_ms

from .audit import MAX_TOPIC_HINT, audit
from .metrics import Metrics

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 10.0
OTHERS = {"api": "(other addresses)", "mqtt": "(other accounts)"}
"""The source (and actor) of what an origin's sources past `sources_per_minute` have done in a minute."""

Key = tuple[int, str, str, int]
"""(minute in ms, source, actor, status)."""


@dataclass(slots=True)
class _Tally:
    origin: str
    tenant_id: str | None
    action: str
    target: str
    detail: str | None
    pending: int = 0
    """Counted and not yet in the registry."""
    total: int = 0
    """Counted in its minute: what its log line says."""


class RefusalTally:
    def __init__(self, registry: Registry, metrics: Metrics, *, sources_per_minute: int, max_field_chars: int) -> None:
        self._registry = registry
        self._metrics = metrics
        self._sources_per_minute = sources_per_minute
        self._max_field_chars = max_field_chars
        self._tallies: dict[Key, _Tally] = {}
        self._sources: Counter[tuple[str, int]] = Counter()
        """(origin, minute) -> sources counted apart in it."""
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def note(
        self,
        origin: str,
        *,
        source: str,
        actor: str,
        status: int,
        tenant_id: str | None,
        action: str,
        target: str,
        detail: str | None,
    ) -> None:
        """One refusal: a count in memory; what it tried is kept (cut) if it is its minute's first."""
        minute = now_ms() // 60_000 * 60_000
        key = (minute, source, actor, status)
        tally = self._tallies.get(key)
        if tally is None:
            if self._sources[(origin, minute)] >= self._sources_per_minute:
                self._metrics.audit_folded += 1
                key, tenant_id = (minute, OTHERS[origin], OTHERS[origin], status), None
                tally = self._tallies.get(key)
            else:
                self._sources[(origin, minute)] += 1
        if tally is None:
            cut = self._max_field_chars
            shown = None if detail is None else bounded(detail, cut)
            tally = self._tallies[key] = _Tally(origin, tenant_id, bounded(action, cut), bounded(target, cut), shown)
        tally.pending += 1
        tally.total += 1
        self._metrics.audit_counted[origin] += 1
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_EVERY_S, self._flush_later)

    def _flush_later(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self, *, final: bool = False) -> None:
        """Pending counts into the registry; minutes that are over (every minute, if `final`) are logged
        and forgotten. Tallies still open are flushed again later."""
        async with self._lock:
            pending = [(key, tally, tally.pending) for key, tally in self._tallies.items() if tally.pending]
            for _key, tally, _count in pending:
                tally.pending = 0
            try:
                await self._registry.audit.count_refusals([_count_of(key, t, count) for key, t, count in pending])
            except Exception:
                log.exception("could not count %d refusal(s) in the audit trail", sum(c for _k, _t, c in pending))
                if not final:  # tried again at the next flush
                    for _key, tally, count in pending:
                        tally.pending += count
            current = now_ms() // 60_000 * 60_000
            over = [k for k, t in self._tallies.items() if (final or k[0] < current) and not t.pending]
            for key in over:
                self._log(key, self._tallies.pop(key))
            for counted in [k for k in self._sources if final or k[1] < current]:
                del self._sources[counted]
        if self._tallies:
            self._schedule()

    async def close(self) -> None:
        """At stop: everything counted is written and logged."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.flush(final=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @staticmethod
    def _log(key: Key, tally: _Tally) -> None:
        minute, source, actor, status = key
        audit(
            "writes_refused",
            origin=tally.origin,
            minute=from_ms(minute).strftime("%Y-%m-%dT%H:%MZ"),
            source=source,
            actor=actor,
            tenant=tally.tenant_id,
            status=status,
            count=tally.total,
            action=bounded(tally.action, MAX_TOPIC_HINT),
            target=bounded(tally.target, MAX_TOPIC_HINT),
        )


def _count_of(key: Key, tally: _Tally, count: int) -> RefusalCount:
    minute, source, actor, status = key
    return RefusalCount(minute, source, actor, status, count, tally.tenant_id, tally.action, tally.target, tally.detail)
