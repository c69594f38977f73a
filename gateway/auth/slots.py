"""Worker slots that a waiter gives up on after a deadline, with an urgent lane served first.

A plain semaphore makes the last of a flood wait for the whole flood, however long it is. Here a
waiter past its deadline leaves the queue (its caller refuses rather than queueing more work), and
waiters in the urgent lane are served before the others, though never twice in a row while others
wait (so it cannot starve them); each lane is served in arrival order. `express` slots more serve
the urgent lane alone, so an urgent waiter need not wait for the others' work under way either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class SlotsBusy(Exception):
    """No slot came free within the deadline."""


class Slots:
    def __init__(self, count: int, express: int = 0) -> None:
        self._free = count
        self._express_free = express
        self._urgent: deque[asyncio.Future[bool]] = deque()
        self._normal: deque[asyncio.Future[bool]] = deque()
        self._urgent_served_last = False

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    @contextlib.asynccontextmanager
    async def hold(self, *, deadline: float | None = None, urgent: bool = False) -> AsyncIterator[None]:
        """One slot for the body; SlotsBusy if none came free within `deadline` seconds."""
        express = await self._acquire(deadline, urgent)
        try:
            yield
        finally:
            self._release(express)

    async def _acquire(self, deadline: float | None, urgent: bool) -> bool:
        """True when the slot is an express one."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return False
        if urgent and self._express_free > 0 and not self._urgent:
            self._express_free -= 1
            return True
        lane = self._urgent if urgent else self._normal
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane.append(waiter)
        try:
            async with asyncio.timeout(deadline):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # the slot came just as the deadline passed
            self._forget(waiter, lane)
            raise SlotsBusy from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed a slot, then cancelled: pass it on
            else:
                self._forget(waiter, lane)
            raise

    @staticmethod
    def _forget(waiter: asyncio.Future[bool], lane: deque[asyncio.Future[bool]]) -> None:
        with contextlib.suppress(ValueError):
            lane.remove(waiter)

    def _release(self, express: bool) -> None:
        if express:
            if not self._hand_over(self._urgent, express=True):
                self._express_free += 1
            return
        normals_turn = self._urgent_served_last and bool(self._normal)
        for lane in (self._normal, self._urgent) if normals_turn else (self._urgent, self._normal):
            if self._hand_over(lane, express=False):
                self._urgent_served_last = lane is self._urgent
                return
        self._free += 1

    @staticmethod
    def _hand_over(lane: deque[asyncio.Future[bool]], *, express: bool) -> bool:
        while lane:
            waiter = lane.popleft()
            if not waiter.done():
                waiter.set_result(express)
                return True
        return False
