"""1/KP topic rules for devices: `kp1/<app version>/<extension>/<endpoint token>/<resource path>`."""

from __future__ import annotations

KP1 = "kp1"
_WILDCARDS = ("+", "#")


def device_may_use(tokens: frozenset[str], topic: str) -> bool:
    """True when `topic` (a topic name or a subscription filter) lies below one of `tokens`.

    The first four levels must be literal: no wildcard may widen a filter above the token, so
    `#`, `kp1/#` and `kp1/+/+/+/#` are refused. Wildcards are fine in the resource path.
    """
    levels = topic.split("/", 4)
    if len(levels) < 5 or levels[0] != KP1:
        return False
    app_version, extension, token = levels[1], levels[2], levels[3]
    if not app_version or not extension or app_version in _WILDCARDS or extension in _WILDCARDS:
        return False
    return token in tokens


EVENTS_ROOT = "$gateway/events"


def events_topic(tenant_id: str, subject: str) -> str:
    return f"{EVENTS_ROOT}/{tenant_id}/{subject}"


def service_may_use(tenant_id: str, topic: str) -> bool:
    """A service account reads its own tenant's events: `$gateway/events/<tenant>/...` and nothing else."""
    levels = topic.split("/", 3)
    return len(levels) == 4 and f"{levels[0]}/{levels[1]}" == EVENTS_ROOT and levels[2] == tenant_id and bool(levels[3])
