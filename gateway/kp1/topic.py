"""The 1/KP topic grammar, once: `kp1/<app version>/<extension>/<endpoint token>/<resource path>[/<request id>]`.

`parse` reads a topic a device published to; `device_may_use` decides whether a topic or filter lies
below one of a device's tokens. Both split the same four-level head (`head`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..mqtt.subscriptions import topic_matches

KP1 = "kp1"
MAX_REQUEST_ID = 2**31 - 1
_WILDCARDS = ("+", "#")
_REQUEST_ID = re.compile(r"[1-9][0-9]{0,9}")  # positive, no sign, no leading zero


@dataclass(frozen=True, slots=True)
class Kp1Topic:
    topic: str
    app_version: str
    extension: str
    token: str
    path: str
    """The resource path with a leading '/': '/update/keys'. Empty when the topic ends at the token."""
    request_id: int | None


def head(topic: str) -> tuple[str, str, str, list[str]] | None:
    """(app version, extension, token, the levels after the token), or None when `topic` does not start
    `kp1/` with at least four levels. MQTT is slash-sensitive: nothing is normalized."""
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != KP1:
        return None
    return levels[1], levels[2], levels[3], levels[4:]


def parse(topic: str) -> Kp1Topic | None:
    """None when this is not a kp1 topic at all."""
    parts = head(topic)
    if parts is None:
        return None
    app_version, extension, token, rest = parts
    request_id = None
    if rest and _REQUEST_ID.fullmatch(rest[-1]) and int(rest[-1]) <= MAX_REQUEST_ID:
        request_id = int(rest[-1])
        rest = rest[:-1]
    path = "/" + "/".join(rest) if rest else ""
    return Kp1Topic(topic, app_version, extension, token, path, request_id)


def device_may_use(tokens: frozenset[str], topic: str) -> bool:
    """True when `topic` (a topic name or a subscription filter) lies below one of `tokens`.

    The first four levels must be literal: no wildcard may widen a filter above the token, so
    `#`, `kp1/#` and `kp1/+/+/+/#` are refused. Wildcards are fine in the resource path, which must
    have at least one level.
    """
    parts = head(topic)
    if parts is None:
        return False
    app_version, extension, token, rest = parts
    if not rest or not app_version or not extension or app_version in _WILDCARDS or extension in _WILDCARDS:
        return False
    return token in tokens


def topics_matched(filters: Iterable[str], extension: str, rest: str) -> Iterator[str]:
    """The topics `kp1/<app version>/<extension>/<token>/<rest>` that `filters` (a device's, whose first
    four levels are literal) match, one per app version and token: where the gateway pushes to a device
    that observes (`command/<type>/status`, `config/json/status`)."""
    seen = set()
    for topic_filter in filters:
        parts = head(topic_filter)
        if parts is None or parts[1] != extension:
            continue
        topic = f"{KP1}/{parts[0]}/{extension}/{parts[2]}/{rest}"
        if topic not in seen and topic_matches(topic, topic_filter):
            seen.add(topic)
            yield topic
