"""Who is subscribed to what: a topic-level trie, so finding a topic's subscribers costs the topic's
levels, not the number of filters (amqtt scans every filter on every message).

Keyed by session key. Filters are stored as the session gave them; matching follows MQTT 3.1.1
§4.7 ('+' one level, '#' the rest including the parent, `$` topics never matched by a leading
wildcard). No regex is built from client input.

`TenantSubscriptions` holds one index per tenant: a device's topics are named by tokens unique only
within its tenant, so a publish is matched against its own tenant's subscriptions and no other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    here: dict[str, int] = field(default_factory=dict)
    """Sessions whose filter ends at this node: key -> granted QoS."""
    rest: dict[str, int] = field(default_factory=dict)
    """Sessions whose filter is this node's path followed by '#'."""

    def empty(self) -> bool:
        return not (self.children or self.here or self.rest)


def valid_filter(topic_filter: str) -> bool:
    """[MQTT-4.7.1-2/3]: '#' alone and last, '+' alone in its level; not empty."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic: str, topic_filter: str) -> bool:
    """One topic against one filter, by the same rules as the index."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t_levels, f_levels = topic.split("/"), topic_filter.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or level not in ("+", t_levels[i]):
            return False
    return len(t_levels) == len(f_levels)


class SubscriptionIndex:
    def __init__(self) -> None:
        self._root = _Node()
        self._by_session: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        """Filters held, over all sessions."""
        return sum(len(filters) for filters in self._by_session.values())

    def filters_of(self, key: str) -> dict[str, int]:
        return self._by_session.get(key, {})

    def is_empty(self) -> bool:
        return not self._by_session

    def add(self, key: str, topic_filter: str, qos: int) -> None:
        """Adds or replaces (new QoS) one subscription of the session."""
        levels = topic_filter.split("/")
        node = self._root
        last = levels[-1]
        for level in levels[:-1] if last == "#" else levels:
            node = node.children.setdefault(level, _Node())
        (node.rest if last == "#" else node.here)[key] = qos
        self._by_session.setdefault(key, {})[topic_filter] = qos

    def remove(self, key: str, topic_filter: str) -> bool:
        filters = self._by_session.get(key)
        if filters is None or filters.pop(topic_filter, None) is None:
            return False
        if not filters:
            del self._by_session[key]
        levels = topic_filter.split("/")
        wildcard_tail = levels[-1] == "#"
        path = [self._root]
        for level in levels[:-1] if wildcard_tail else levels:
            path.append(path[-1].children[level])
        (path[-1].rest if wildcard_tail else path[-1].here).pop(key, None)
        for depth in range(len(path) - 1, 0, -1):  # prune empty branches
            if not path[depth].empty():
                break
            del path[depth - 1].children[(levels[:-1] if wildcard_tail else levels)[depth - 1]]
        return True

    def remove_session(self, key: str) -> int:
        filters = list(self.filters_of(key))
        for topic_filter in filters:
            self.remove(key, topic_filter)
        return len(filters)

    def subscribers(self, topic: str) -> dict[str, int]:
        """Session key -> the highest QoS its filters matching `topic` granted: what routing needs, found
        without naming each filter (a publish may match hundreds of one device's own)."""
        levels = topic.split("/")
        depth_of_topic = len(levels)
        dollar = topic.startswith("$")
        found: dict[str, int] = {}
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            top = depth == 0
            if node.rest and not (top and dollar):
                _merge(found, node.rest)
            if depth == depth_of_topic:
                if node.here:
                    _merge(found, node.here)
                continue
            children = node.children
            exact = children.get(levels[depth])
            if exact is not None:
                stack.append((exact, depth + 1))
            plus = children.get("+")
            if plus is not None and not (top and dollar):
                stack.append((plus, depth + 1))
        return found

    def match(self, topic: str) -> Iterator[tuple[str, int, str]]:
        """(session key, granted QoS, filter) for every subscription matching `topic`."""
        levels = topic.split("/")
        dollar = topic.startswith("$")
        stack: list[tuple[_Node, int, str]] = [(self._root, 0, "")]
        while stack:
            node, depth, prefix = stack.pop()
            top = depth == 0
            if not (top and dollar):  # '#' matches the parent level too: 'a/#' matches 'a'
                for key, qos in node.rest.items():
                    yield key, qos, f"{prefix}#"
            if depth == len(levels):
                for key, qos in node.here.items():
                    yield key, qos, prefix[:-1]
                continue
            level = levels[depth]
            exact = node.children.get(level)
            if exact is not None:
                stack.append((exact, depth + 1, f"{prefix}{level}/"))
            plus = node.children.get("+")
            if plus is not None and not (top and dollar):
                stack.append((plus, depth + 1, f"{prefix}+/"))


class TenantSubscriptions:
    """A SubscriptionIndex per tenant (dropped when its last filter goes), each session in its own."""

    def __init__(self) -> None:
        self._tenants: dict[str, SubscriptionIndex] = {}
        self._tenant_of: dict[str, str] = {}

    def __len__(self) -> int:
        """Filters held, over all sessions of all tenants."""
        return sum(len(index) for index in self._tenants.values())

    def tenant_of(self, key: str) -> str | None:
        """The tenant of a session holding at least one filter."""
        return self._tenant_of.get(key)

    def filters_of(self, key: str) -> dict[str, int]:
        tenant = self._tenant_of.get(key)
        return {} if tenant is None else self._tenants[tenant].filters_of(key)

    def add(self, tenant: str, key: str, topic_filter: str, qos: int) -> None:
        if self._tenant_of.setdefault(key, tenant) != tenant:  # a session key names one tenant
            raise ValueError(f"session {key!r} is not of tenant {tenant!r}")
        self._tenants.setdefault(tenant, SubscriptionIndex()).add(key, topic_filter, qos)

    def remove(self, key: str, topic_filter: str) -> bool:
        tenant = self._tenant_of.get(key)
        if tenant is None:
            return False
        removed = self._tenants[tenant].remove(key, topic_filter)
        self._forget_if_empty(tenant, key)
        return removed

    def remove_session(self, key: str) -> int:
        tenant = self._tenant_of.get(key)
        if tenant is None:
            return 0
        removed = self._tenants[tenant].remove_session(key)
        self._forget_if_empty(tenant, key)
        return removed

    def subscribers(self, tenant: str, topic: str) -> dict[str, int]:
        """Session key -> highest granted QoS of the tenant's subscriptions matching `topic`."""
        index = self._tenants.get(tenant)
        return {} if index is None else index.subscribers(topic)

    def match(self, tenant: str, topic: str) -> Iterator[tuple[str, int, str]]:
        """(session key, granted QoS, filter) of the tenant's subscriptions matching `topic`."""
        index = self._tenants.get(tenant)
        return iter(()) if index is None else index.match(topic)

    def _forget_if_empty(self, tenant: str, key: str) -> None:
        index = self._tenants[tenant]
        if not index.filters_of(key):
            del self._tenant_of[key]
        if index.is_empty():
            del self._tenants[tenant]


def _merge(found: dict[str, int], granted: dict[str, int]) -> None:
    for key, qos in granted.items():
        if found.get(key, -1) < qos:
            found[key] = qos
