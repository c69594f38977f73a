"""Retained messages, bounded per device and in total (count and payload bytes).

A retained message belongs to the device that published it (its owner key); a device over its
share, or a node over its total, keeps what is stored and does not retain the new message (the
publish itself is still delivered). Replacing a topic's message counts only the difference.

Lookups for a new subscription go by the filter's first four levels (`kp1/<app>/<ext>/<token>`,
the only place a device may subscribe), so they do not scan every retained message.

Messages are kept per tenant: the same topic string of two tenants (two devices both named by the
bound token `kettle-1`) is two messages, and a subscription is replayed its own tenant's only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..auth.identity import DeviceIdentity
from .subscriptions import topic_matches


@dataclass(frozen=True, slots=True)
class Retained:
    topic: str
    data: bytes
    qos: int
    owner: str
    tenant: str
    """Whose topic space the message is in (the publisher's tenant)."""
    source: DeviceIdentity | None = None


@dataclass(frozen=True, slots=True)
class RetainedLimits:
    per_owner: int
    per_owner_bytes: int
    total: int
    total_bytes: int


class RetainedStore:
    def __init__(self, limits: RetainedLimits) -> None:
        self._limits = limits
        self._messages: dict[tuple[str, str], Retained] = {}  # by (tenant, topic)
        self._count: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self._total_bytes = 0
        self._by_head: dict[tuple[str, str], set[str]] = {}  # (tenant, first four levels) -> topics

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def total_bytes(self) -> int:
        return self._total_bytes

    def put(self, message: Retained) -> str | None:
        """Stores (or, with an empty payload, clears) the topic's retained message. Returns the name
        of the limit that refused it, or None."""
        old = self._messages.get((message.tenant, message.topic))
        if not message.data:
            if old is not None:
                self._drop(old)
            return None
        more = 0 if old is not None and old.owner == message.owner else 1
        extra = _size(message) - (_size(old) if old is not None and old.owner == message.owner else 0)
        limits = self._limits
        if self._count[message.owner] + more > limits.per_owner:
            return "max_retained_per_device"
        if self._bytes[message.owner] + extra > limits.per_owner_bytes:
            return "max_retained_bytes_per_device"
        replaced = 1 if old is not None else 0
        replaced_bytes = _size(old) if old is not None else 0
        if len(self._messages) - replaced + 1 > limits.total:
            return "max_retained_messages"
        if self._total_bytes - replaced_bytes + _size(message) > limits.total_bytes:
            return "max_retained_bytes"
        if old is not None:
            self._drop(old)
        self._messages[message.tenant, message.topic] = message
        self._by_head.setdefault((message.tenant, _head(message.topic)), set()).add(message.topic)
        self._count[message.owner] += 1
        self._bytes[message.owner] += _size(message)
        self._total_bytes += _size(message)
        return None

    def matching(self, tenant: str, topic_filter: str) -> Iterator[Retained]:
        """The tenant's retained messages that `topic_filter` matches."""
        if "+" not in topic_filter and "#" not in topic_filter:
            exact = self._messages.get((tenant, topic_filter))
            return iter(() if exact is None else (exact,))
        head = topic_filter.split("/", 4)[:4]
        if len(head) == 4 and not any(level in ("+", "#") for level in head):
            topics = list(self._by_head.get((tenant, "/".join(head)), ()))
        else:
            topics = [topic for of, topic in self._messages if of == tenant]
        return (
            self._messages[tenant, t]
            for t in topics
            if (tenant, t) in self._messages and topic_matches(t, topic_filter)
        )

    def forget(self, matches: Callable[[Retained], bool]) -> int:
        """Drops the retained messages that match (those of a revoked or deleted device)."""
        gone = [m for m in self._messages.values() if matches(m)]
        for message in gone:
            self._drop(message)
        return len(gone)

    def _drop(self, message: Retained) -> None:
        del self._messages[message.tenant, message.topic]
        head = message.tenant, _head(message.topic)
        self._by_head[head].discard(message.topic)
        if not self._by_head[head]:
            del self._by_head[head]
        self._count[message.owner] -= 1
        self._bytes[message.owner] -= _size(message)
        self._total_bytes -= _size(message)
        if self._count[message.owner] <= 0:
            del self._count[message.owner]
            del self._bytes[message.owner]


def _size(message: Retained) -> int:
    return len(message.topic) + len(message.data)


def _head(topic: str) -> str:
    return "/".join(topic.split("/", 4)[:4])
