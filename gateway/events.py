"""Delivers the outbox to the tenants' service accounts, at least once.

An event is marked published only after at least one consumer subscribed to it acknowledged it
(QoS 1 PUBACK). Until a consumer is there, a tenant's events wait, in order; a crash between
commit and delivery re-sends (consumers dedupe on correlationId).
"""

from __future__ import annotations

import asyncio
import logging
import time

from registry import Registry

from .broker import GatewayBroker
from .topics import events_topic

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = 5.0
PRUNE_EVERY = 60.0


class EventDispatcher:
    def __init__(self, broker: GatewayBroker, registry: Registry, *, retention_hours: float, interval: float = 0.1):
        self._broker = broker
        self._registry = registry
        self._retention_ms = int(retention_hours * 3_600_000)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.dispatch_once()
                if time.monotonic() - self._last_prune > PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    await self._registry.outbox.prune(self._retention_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event delivery failed; retrying")
            await asyncio.sleep(self._interval)

    async def dispatch_once(self) -> int:
        delivered: list[int] = []
        waiting: set[str] = set()  # tenants whose earlier event is undelivered: keep their order
        for event in await self._registry.outbox.pending():
            if event.tenant_id in waiting:
                continue
            topic = events_topic(event.tenant_id, event.subject)
            consumers = self._broker.event_consumers(event.tenant_id, topic)
            results = await asyncio.gather(
                *(
                    asyncio.wait_for(h.mqtt_publish(topic, event.body, 1, retain=False), DELIVERY_TIMEOUT)
                    for h in consumers
                ),
                return_exceptions=True,
            )
            if any(not isinstance(r, BaseException) for r in results):
                delivered.append(event.id)
            else:
                waiting.add(event.tenant_id)
        await self._registry.outbox.mark_published(delivered)
        return len(delivered)
