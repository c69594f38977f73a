"""What an event is for the outbox's bounds: its key (which events describe the same thing), how two
of them fold into one, and how a too large one is cut down. Pure functions; the SQL is in
registry/event_bounds.py.
"""

from __future__ import annotations

import json
from typing import Any

METADATA_UPDATED = "endpoint/metadata/updated"
DROPPED = "events/dropped"
"""The event that says how many of the tenant's oldest events were dropped to keep its bound."""
ENVELOPE = ("correlationId", "timestamp", "originatorReplicaId")

_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "endpoint/matched": ("filterId", "endpointId"),
    "endpoint/unmatched": ("filterId", "endpointId"),
    "filter/": ("filterId",),
    "group/": ("group",),
    "command/": ("endpointId", "commandType"),
    DROPPED: (),
}
_KEPT_WHOLE = frozenset({*ENVELOPE, "endpointId", "endpoints", "appVersionName", "filterId", "group", "commandId"})
"""Fields never left out of a too large event (all of them short)."""


def encoded(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def coalesce_key(subject: str, fields: dict[str, Any]) -> str:
    """Events with the same key (kind, device, and filter or command type) may be folded together
    (never `events/dropped`, which is changed in place instead)."""
    names = (
        _KEY_FIELDS[subject]
        if subject in _KEY_FIELDS
        else next(
            (names for prefix, names in _KEY_FIELDS.items() if prefix.endswith("/") and subject.startswith(prefix)),
            ("endpointId",),
        )
    )
    return encoded([subject, *(fields.get(name) for name in names)])


def fold(subject: str, older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """One event standing for `older` then `newer` (the same key): the newer one, whose metadata
    changes become the net change of both (from before `older` to after `newer`)."""
    if subject != METADATA_UPDATED:
        return newer
    changes = _changes(older)
    for key, (before, after) in _changes(newer).items():
        changes[key] = (changes[key][0] if key in changes else before, after)
    folded = {k: v for k, v in newer.items() if k not in ("added", "removed", "updated", "omitted")}
    folded["added"] = {k: a for k, (b, a) in changes.items() if b is _ABSENT and a is not _ABSENT}
    folded["removed"] = {k: b for k, (b, a) in changes.items() if b is not _ABSENT and a is _ABSENT}
    folded["updated"] = {
        k: {"oldValue": b, "newValue": a}
        for k, (b, a) in changes.items()
        if b is not _ABSENT and a is not _ABSENT and (b != a or b is None)
    }
    if "omitted" in older or "omitted" in newer:
        folded["omitted"] = sorted({*older.get("omitted", ()), *newer.get("omitted", ())})
    return folded


class _Absent:
    """A key that had no value (before it was added, after it was removed)."""


_ABSENT: Any = _Absent()


def _changes(event: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """key -> (value before, value after) of a metadata event; None is a value left out (too large)."""
    changes: dict[str, tuple[Any, Any]] = {k: (_ABSENT, v) for k, v in event.get("added", {}).items()}
    changes |= {k: (v, _ABSENT) for k, v in event.get("removed", {}).items()}
    changes |= {k: (v.get("oldValue"), v.get("newValue")) for k, v in event.get("updated", {}).items()}
    return changes


def shrink(subject: str, payload: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """`payload` cut down to `max_bytes` of JSON, saying what it left out in `omitted`: a metadata
    event first drops its values (its keys stay, each with null: read them through the API), then any
    event its largest fields, until it fits."""
    if len(encoded(payload).encode()) <= max_bytes:
        return payload
    cut = dict(payload)
    omitted: list[str] = list(cut.get("omitted", ()))
    if subject == METADATA_UPDATED:
        cut["added"] = dict.fromkeys(cut.get("added", {}))
        cut["removed"] = dict.fromkeys(cut.get("removed", {}))
        cut["updated"] = {k: {"oldValue": None, "newValue": None} for k in cut.get("updated", {})}
        omitted = sorted({*omitted, "values"})
        cut["omitted"] = omitted
    sizes = sorted(
        ((len(encoded({k: v}).encode()), k) for k, v in cut.items() if k not in _KEPT_WHOLE and k != "omitted"),
        reverse=True,
    )
    for _size, name in sizes:
        if len(encoded(cut).encode()) <= max_bytes:
            break
        del cut[name]
        omitted.append(name)
        cut["omitted"] = omitted
    return cut
