"""Retained messages, bounded per device, per tenant and in total (count and topic + payload bytes).

A retained message belongs to the device that published it (its owner key, `<tenant>/<device>`); a
device over its share, a tenant over its budget, or a node over its total keeps what is stored and
does not retain the new message (the publish itself is still delivered, and acknowledged: MQTT 3.1.1
has no way to say "delivered but not retained"; router.py counts and logs it). Replacing a topic's
message counts only the difference. A tenant's budget is its own (`maxRetainedMessages`,
`maxRetainedBytes`) or else its share of the totals, so one tenant's use never takes all of another's.

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
    tenant_share: float = 1.0
    """Of `total` and `total_bytes`, what a tenant without limits of its own may hold."""


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's own retained limits (None: its share of the node's)."""

    messages: int | None = None
    bytes: int | None = None


class _Usage:
    """Messages and bytes held, per key (a device's owner key, or a tenant id)."""

    def __init__(self, key: Callable[[Retained], str]) -> None:
        self.key = key
        self.count: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    def over(self, message: Retained, old: Retained | None, max_count: int, max_bytes: int) -> str | None:
        """'count' or 'bytes' if storing `message` (replacing `old`) would go over, else None."""
        key = self.key(message)
        same = old is not None and self.key(old) == key
        extra = _size(message) - (_size(old) if same and old is not None else 0)
        if self.count[key] + (0 if same else 1) > max_count:
            return "count"
        if self.bytes[key] + extra > max_bytes:
            return "bytes"
        return None

    def add(self, message: Retained, sign: int) -> None:
        key = self.key(message)
        self.count[key] += sign
        self.bytes[key] += sign * _size(message)
        if self.count[key] <= 0:
            del self.count[key]
            del self.bytes[key]


class RetainedStore:
    def __init__(self, limits: RetainedLimits) -> None:
        self._limits = limits
        self._messages: dict[tuple[str, str], Retained] = {}  # by (tenant, topic)
        self._owners = _Usage(lambda m: m.owner)
        self._tenants = _Usage(lambda m: m.tenant)
        self._total_bytes = 0
        self._by_head: dict[tuple[str, str], set[str]] = {}  # (tenant, first four levels) -> topics
        self._tenant_share = (int(limits.total * limits.tenant_share), int(limits.total_bytes * limits.tenant_share))

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def total_bytes(self) -> int:
        return self._total_bytes

    def put(self, message: Retained, budget: TenantBudget | None = None) -> str | None:
        """Stores (or, with an empty payload, clears) the topic's retained message. Returns the name
        of the limit that refused it, or None."""
        old = self._messages.get((message.tenant, message.topic))
        if not message.data:
            if old is not None:
                self._drop(old)
            return None
        if (refused := self._refusal(message, old, budget or TenantBudget())) is not None:
            return refused
        if old is not None:
            self._drop(old)
        self._messages[message.tenant, message.topic] = message
        self._by_head.setdefault((message.tenant, _head(message.topic)), set()).add(message.topic)
        self._owners.add(message, 1)
        self._tenants.add(message, 1)
        self._total_bytes += _size(message)
        return None

    def _refusal(self, message: Retained, old: Retained | None, budget: TenantBudget) -> str | None:
        limits = self._limits
        over = self._owners.over(message, old, limits.per_owner, limits.per_owner_bytes)
        if over is not None:
            return "max_retained_per_device" if over == "count" else "max_retained_bytes_per_device"
        replaced_bytes = _size(old) if old is not None else 0
        if len(self._messages) - (old is not None) + 1 > limits.total:
            return "max_retained_messages"
        if self._total_bytes - replaced_bytes + _size(message) > limits.total_bytes:
            return "max_retained_bytes"
        share_count, share_bytes = self._tenant_share
        max_count = share_count if budget.messages is None else budget.messages
        max_bytes = share_bytes if budget.bytes is None else budget.bytes
        over = self._tenants.over(message, old, max_count, max_bytes)
        if over is None:
            return None
        if (budget.messages if over == "count" else budget.bytes) is None:
            return "tenant_retained_share"
        return "tenant_max_retained_messages" if over == "count" else "tenant_max_retained_bytes"

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
        self._owners.add(message, -1)
        self._tenants.add(message, -1)
        self._total_bytes -= _size(message)


def _size(message: Retained) -> int:
    return len(message.topic) + len(message.data)


def _head(topic: str) -> str:
    return "/".join(topic.split("/", 4)[:4])
