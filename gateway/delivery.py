"""Messages on their way to one session: a bounded queue, drained by one sender while connected.

The bounds hold whatever the client does: at most `max_queued_messages` / `max_queued_bytes` wait
(when full the oldest QoS 0 message is dropped; with only QoS 1/2 left, a connected client is closed
as a slow consumer and an offline one loses its oldest message), at most `max_inflight_messages`
QoS 1/2 messages are sent and unacknowledged, and a client that stops reading blocks only its own
sender (the writer gives up after `slow_consumer_timeout`). Offline persistent sessions keep QoS 1/2
messages only. Every drop is counted.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from .audit import topic_hint
from .connection import CloseReason, GatewayProtocolHandler
from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    max_messages: int
    max_bytes: int
    max_inflight: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    data: bytes
    qos: int
    retain: bool = False

    @property
    def size(self) -> int:
        """What the message holds: a topic can be 65,535 bytes, more than most payloads."""
        return len(self.topic) + len(self.data)


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
        self._handler: BrokerProtocolHandler | None = None
        self._unacked: dict[int, Outgoing] = {}
        self._seq = itertools.count()

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
            victim = next((m for m in self._queue if m.qos == 0), None)
            if victim is None:
                if self.connected:
                    self._on_slow()  # a connected client that cannot keep up with QoS 1/2 traffic
                victim = self._queue[0]
            self._queue.remove(victim)
            self._bytes -= victim.size
            self._metrics.messages_dropped += 1

    # -- the sender, while a connection is attached ----------------------------------------------------

    def attach(self, handler: BrokerProtocolHandler) -> None:
        self.detach()
        self._handler = handler
        self._sender = asyncio.create_task(self._send(handler))
        if self._queue:
            self._ready.set()

    def detach_from(self, handler: BrokerProtocolHandler) -> None:
        """Detaches, unless another connection (a takeover) attached since."""
        if self._handler is handler:
            self.detach()

    def detach(self) -> None:
        """Stops sending. Unacknowledged QoS 1/2 messages go back to the front of the queue (in
        order), so a persistent session gets them again when it returns."""
        self._handler = None
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        if self._unacked and self.persistent:
            self._queue.extendleft(reversed(list(self._unacked.values())))
            self._bytes += sum(m.size for m in self._unacked.values())
        self._unacked.clear()
        if not self.persistent:
            self._queue.clear()
            self._bytes = 0
        else:  # an offline session keeps QoS 1/2 only
            kept = [m for m in self._queue if m.qos > 0]
            self._queue = collections.deque(kept)
            self._bytes = sum(m.size for m in kept)

    async def _send(self, handler: BrokerProtocolHandler) -> None:
        window = asyncio.Semaphore(self._limits.max_inflight)
        acks: set[asyncio.Task[None]] = set()
        try:
            while True:
                while not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                message = self._queue.popleft()
                self._bytes -= message.size
                if message.qos == 0:
                    await handler.mqtt_publish(message.topic, message.data, 0, message.retain)
                    continue
                seq = next(self._seq)
                self._unacked[seq] = message  # before waiting: a cancelled wait must not lose it
                await window.acquire()
                task = asyncio.create_task(self._acknowledged(handler, seq, message, window))
                acks.add(task)
                task.add_done_callback(acks.discard)
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
        self, handler: BrokerProtocolHandler, seq: int, message: Outgoing, window: asyncio.Semaphore
    ) -> None:
        try:
            await handler.mqtt_publish(message.topic, message.data, message.qos, message.retain)
            self._unacked.pop(seq, None)
        except TimeoutError:  # amqtt waits 5 s for PUBACK/PUBREC/PUBCOMP; MQTT 3.1.1 resends only on reconnect
            # keep it unacknowledged and end the connection: detach() puts it back for a persistent
            # session, which gets it again when it returns (a clean session loses it with the session)
            self._metrics.limits_hit["ack_timeout"] += 1
            if isinstance(handler, GatewayProtocolHandler):  # this connection, not whichever holds the key now
                handler.close(CloseReason.SLOW_CONSUMER, "no acknowledgement within amqtt's 5 s")
        except (ConnectionError, OSError):
            pass  # stays unacknowledged: detach() puts it back for a persistent session
        except Exception as exc:
            self._unacked.pop(seq, None)
            log.warning("delivering %s failed: %r", topic_hint(message.topic), exc)
        finally:
            window.release()
