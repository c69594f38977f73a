"""The gateway's own `$gateway/...` topics: where a tenant's service accounts read its events.

Device topics (1/KP) are gateway/kp1/topic.py.
"""

from __future__ import annotations

EVENTS_ROOT = "$gateway/events"


def events_topic(tenant_id: str, subject: str) -> str:
    return f"{EVENTS_ROOT}/{tenant_id}/{subject}"


def service_may_use(tenant_id: str, topic: str) -> bool:
    """A service account reads its own tenant's events: `$gateway/events/<tenant>/...` and nothing else."""
    levels = topic.split("/", 3)
    return len(levels) == 4 and f"{levels[0]}/{levels[1]}" == EVENTS_ROOT and levels[2] == tenant_id and bool(levels[3])
