"""Messages on their way to one session: a bounded queue, drained by one sender while connected.

The bounds hold whatever the client does: at most `max_queued_messages` / `max_queued_bytes` wait
(when full the oldest QoS 0 or droppable message (device data) is dropped; with only QoS 1/2 messages
that must arrive left, a connected client is closed as a slow consumer and an offline one loses its
oldest message), at most `max_inflight_messages`
QoS 1/2 messages are sent and unacknowledged, and a client that stops reading blocks only its own
sender (the writer gives up after `slow_consumer_timeout`). Offline persistent sessions keep QoS 1/2
messages only. Every drop is counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..ops.metrics import Metrics
from .qos import Link, Outgoing, OutgoingFlows

log = logging.getLogger(__name__)


SENDS_PER_TURN = 32
"""Messages a session's sender writes before it lets the others run (as a reader does after 32 packets)."""


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    max_messages: int
    max_bytes: int
    max_inflight: int


class Delivery:
    def __init__(
        self, limits: DeliveryLimits, metrics: Metrics, *, persistent: bool, on_slow: Callable[[], None]
    ) -> None:
        self._limits = limits
        self._metrics = metrics
        self.persistent = persistent
        self._on_slow = on_slow
        self._queue: collections.deque[Outgoing] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._link: Link | None = None
        self.flows = OutgoingFlows()

    @property
    def connected(self) -> bool:
        return self._sender is not None

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def offer(self, message: Outgoing) -> None:
        """Queues a message for the session (never waits): the router's one call."""
        if not self.connected and (message.qos == 0 or not self.persistent):
            return  # nobody to send it to, and nothing the session must keep
        self._queue.append(message)
        self._bytes += message.size
        self._enforce_bounds()
        self._ready.set()

    def _enforce_bounds(self) -> None:
        limits = self._limits
        while len(self._queue) > limits.max_messages or self._bytes > limits.max_bytes:
            limit = "max_queued_messages" if len(self._queue) > limits.max_messages else "max_queued_bytes"
            self._metrics.limits_hit[limit] += 1
            victim = next((m for m in self._queue if m.qos == 0 or m.droppable), None)
            if victim is None:
                if self.connected:
                    self._on_slow()  # a connected client that cannot keep up with QoS 1/2 traffic
                victim = self._queue[0]
            self._queue.remove(victim)
            self._bytes -= victim.size
            self._metrics.messages_dropped += 1

    # -- the sender, while a connection is attached ----------------------------------------------------

    def attach(self, link: Link, on_ack_timeout: Callable[[], None]) -> None:
        self.detach()
        self._link = link
        self._sender = asyncio.create_task(self._send(link, on_ack_timeout))
        if self._queue:
            self._ready.set()

    def detach_from(self, link: Link) -> None:
        """Detaches, unless another connection (a takeover) attached since."""
        if self._link is link:
            self.detach()

    def detach(self) -> None:
        """Stops sending. Unacknowledged QoS 1/2 messages stay in flight for a persistent session, which
        is sent them again (same packet id) when it returns; an offline session keeps QoS 1/2 only."""
        self._link = None
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        self.flows.detach()
        if not self.persistent:
            self.flows.discard()
            self._queue.clear()
            self._bytes = 0
        else:
            kept = [m for m in self._queue if m.qos > 0]
            self._queue = collections.deque(kept)
            self._bytes = sum(m.size for m in kept)

    async def _send(self, link: Link, on_ack_timeout: Callable[[], None]) -> None:
        window = asyncio.Semaphore(self._limits.max_inflight)
        acks: set[asyncio.Task[None]] = set()

        sender = asyncio.current_task()

        def start(flow: Coroutine[Any, Any, None]) -> None:
            task = asyncio.create_task(self._acknowledged(flow, window, on_ack_timeout, sender))
            acks.add(task)
            task.add_done_callback(acks.discard)

        sent = 0
        try:
            for flight in self.flows.in_flight():  # a resumed session: first what it never acknowledged
                await window.acquire()
                if link.closing:
                    return
                start(self.flows.resend(link, flight))
            while True:
                sent += 1
                if sent % SENDS_PER_TURN == 0:  # writes below the high-water mark never wait: let the others run
                    await asyncio.sleep(0)
                while not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                if link.closing:  # what is left stays queued, within the bounds, for a persistent session
                    return
                if self._queue[0].qos == 0:
                    message = self._queue.popleft()
                    self._bytes -= message.size
                    await self.flows.send(link, message)
                    continue
                # a slot first, then off the queue: a sender cancelled while it waits loses nothing
                await window.acquire()
                if link.closing:
                    return
                if not self._queue:
                    window.release()
                    continue
                message = self._queue.popleft()
                self._bytes -= message.size
                if message.qos == 0:
                    window.release()
                    await self.flows.send(link, message)
                    continue
                start(self.flows.send(link, message))
        except (ConnectionError, OSError):
            pass  # the connection is going; its reader reports why
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending to a session failed")
        finally:
            for task in acks:
                task.cancel()

    async def _acknowledged(
        self,
        flow: Coroutine[Any, Any, None],
        window: asyncio.Semaphore,
        on_ack_timeout: Callable[[], None],
        sender: asyncio.Task[Any] | None,
    ) -> None:
        """One QoS 1/2 flow. A failed one stays in flight (resent on resume) and keeps its window slot:
        so at most `max_inflight` messages are ever in flight, however often the link drops."""
        try:
            await flow
        except TimeoutError:  # no acknowledgement within ACK_TIMEOUT: the connection is closed
            self._metrics.limits_hit["ack_timeout"] += 1
            on_ack_timeout()
            return
        except (ConnectionError, OSError):
            if sender is not None:
                sender.cancel()  # the link is gone: nothing more is taken off the queue
            return
        except Exception as exc:
            log.warning("delivering to a session failed: %r", exc)
        window.release()
