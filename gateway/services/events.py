"""Delivers the outbox to the tenants' service accounts, at least once, each tenant on its own.

Every round the dispatcher asks the registry which tenants with a service account have undelivered
events, and gives each of them whose consumer is connected one delivery task, unless one is still
running. A task reads its tenant's oldest undelivered events in id order (the first alone, then
`batch` at a time) and sends each to the tenant's consumers subscribed to it (QoS 1). An event is
marked published only after a consumer's PUBACK; the first event that gets none (nobody subscribed
to it, or no PUBACK within DELIVERY_TIMEOUT) ends the task, and the tenant's later events wait
behind it until a later round. Tenants never wait for one another: the events of a tenant without a
connected consumer are not read, and a consumer that never acknowledges holds up only its own
tenant's task. A crash between commit and delivery re-sends (consumers dedupe on correlationId).

Between deliveries, every COMPACT_EVERY seconds, the outbox's compactor keeps each tenant within
its bound (registry/event_bounds.py) and delivered events are pruned `delivered_retention_seconds`
after delivery; undelivered ones after `retention_hours`. An event changed while it was being sent
(folded into) is not marked published by that delivery and goes out again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from registry import Registry
from registry.outbox import OutboxEvent

from .reach import Reach
from .topics import events_topic

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = 5.0
PRUNE_EVERY = 60.0
COMPACT_EVERY = 1.0


class EventDispatcher:
    def __init__(
        self,
        reach: Reach,
        registry: Registry,
        *,
        node: str,
        retention_hours: float,
        delivered_retention_seconds: float = 300.0,
        interval: float = 0.1,
        batch: int = 100,
    ):
        self._reach = reach
        self._registry = registry
        self._node = node
        self._retention_ms = int(retention_hours * 3_600_000)
        self._delivered_retention_ms = int(delivered_retention_seconds * 1000)
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task[None] | None = None
        self._tenants: dict[str, asyncio.Task[None]] = {}  # the delivery task of each tenant being served
        self._last_prune = 0.0
        self._last_compact = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tenants.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.dispatch_once()
                if time.monotonic() - self._last_compact > COMPACT_EVERY:
                    self._last_compact = time.monotonic()
                    await self._registry.outbox.compact(self._node)
                    await self._registry.outbox.prune_delivered(self._delivered_retention_ms)
                if time.monotonic() - self._last_prune > PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    await self._registry.outbox.prune(self._retention_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event delivery failed; retrying")
            await asyncio.sleep(self._interval)

    async def dispatch_once(self) -> list[str]:
        """One round: starts a delivery task for each tenant that has undelivered events, a connected
        consumer and no task running. Returns those tenants."""
        waiting = [t for t in await self._registry.outbox.waiting_tenants() if t not in self._tenants]
        if not waiting:
            return []
        connected = self._reach.tenants_with_applications()
        started = [t for t in waiting if t in connected]
        for tenant_id in started:
            task = asyncio.create_task(self._deliver(tenant_id))
            self._tenants[tenant_id] = task
            task.add_done_callback(functools.partial(self._finished, tenant_id))
        return started

    def _finished(self, tenant_id: str, task: asyncio.Task[None]) -> None:
        if self._tenants.get(tenant_id) is task:
            del self._tenants[tenant_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("event delivery for tenant %s failed; retrying", tenant_id, exc_info=task.exception())

    async def _deliver(self, tenant_id: str) -> None:
        """The tenant's backlog, in order, until it is empty or an event finds no consumer to ack it."""
        limit = 1  # the head alone first: a tenant whose head nobody subscribed to costs one row a round
        while True:
            events = await self._registry.outbox.pending(tenant_id, limit)
            delivered: list[OutboxEvent] = []
            try:
                for event in events:
                    topic = events_topic(tenant_id, event.subject)
                    if not await self._reach.deliver_event(tenant_id, topic, event.body, DELIVERY_TIMEOUT):
                        return
                    delivered.append(event)
            finally:
                await self._registry.outbox.mark_published(delivered)
            if len(events) < limit:
                return
            limit = self._batch
