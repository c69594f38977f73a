"""Keeps endpoint filters' members up to date in the background (registry/endpoint_filters.py).

Every round: the first scans of new filters, a chunk per transaction, then the devices the
registry's triggers noted as changed, a batch per transaction. Each transaction takes the write
lock on its own, so device CONNECTs, 10/EPMP writes and API calls queue between them, never behind
a whole scan. Nothing here runs on the CONNECT path: a CONNECT only leaves a note (one row).
"""

from __future__ import annotations

import asyncio
import logging

from registry import Registry

log = logging.getLogger(__name__)


class FilterEvaluator:
    def __init__(self, registry: Registry, *, node: str, interval: float = 0.1, batch: int = 500) -> None:
        self._registry = registry
        self._node = node
        self._interval = interval
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("endpoint filter evaluation failed; retrying")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> None:
        """Until no filter is pending and no device is noted; scans and changes take turns, so a long
        first scan does not hold up the events of other filters."""
        store = self._registry.endpoint_filters
        while True:
            scanned = await store.scan_pending(node=self._node)
            changed = await store.evaluate_changed(node=self._node, limit=self._batch)
            if not scanned and not changed:
                return
            await asyncio.sleep(0)
