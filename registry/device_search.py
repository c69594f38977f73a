"""Finding devices: the filters of `GET /v1/tenants/{t}/devices`, compiled to one parameterized query
(values are always bound, never spliced; attribute and metadata keys are checked against their
patterns before they become JSON paths or bound values)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import Invalid
from .models import DeviceState

ATTR_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
METADATA_KEY = re.compile(r"[A-Za-z0-9_]{1,128}")
CONNECTED_SQL = (
    "EXISTS (SELECT 1 FROM live_sessions s WHERE s.tenant_id = d.tenant_id AND s.device_id = d.id"
    " AND s.closed_at IS NULL)"
)
_LAST_SEEN = (
    "(SELECT MAX(COALESCE(c.last_connected_at, 0), COALESCE(c.last_disconnected_at, 0)) FROM connection_status c"
    " WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id)"
)


@dataclass
class DeviceQuery:
    """Every filter is optional; all given ones must hold."""

    group: str | None = None
    state: DeviceState | None = None
    enabled: bool | None = None
    connected: bool | None = None
    app_version: str | None = None
    auto_provisioned: bool | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    """key -> value as given: matches a stored JSON string with that text, or a number/boolean/null
    whose JSON text it is (`metadata.floor=3`)."""
    last_seen_before: int | None = None
    """ms; devices not connected now whose last connect or disconnect is older (or never happened)."""
    last_seen_after: int | None = None
    """ms; devices connected now, or last seen after."""
    id_prefix: str | None = None

    def where(self) -> tuple[list[str], list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (
            ("d.grp", self.group),
            ("d.state", self.state.value if self.state else None),
            ("d.app_version", self.app_version),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        for column, flag in (("d.enabled", self.enabled), ("d.auto_provisioned", self.auto_provisioned)):
            if flag is not None:
                clauses.append(f"{column} = ?")
                args.append(int(flag))
        if self.connected is not None:
            clauses.append(CONNECTED_SQL if self.connected else f"NOT {CONNECTED_SQL}")
        for key, value in self.attributes.items():
            if not ATTR_KEY.fullmatch(key):
                raise Invalid(f"invalid attribute key {key!r}", field=f"attr.{key}")
            clauses.append("json_extract(d.attributes, ?) = ?")
            args += [f'$."{key}"', value]
        for key, value in self.metadata.items():
            if not METADATA_KEY.fullmatch(key):
                raise Invalid(f"invalid metadata key {key!r}", field=f"metadata.{key}")
            clauses.append(
                "EXISTS (SELECT 1 FROM metadata m WHERE m.tenant_id = d.tenant_id AND m.device_id = d.id"
                " AND m.key = ? AND (m.value = json_quote(?) OR m.value = ?))"
            )
            args += [key, value, value]
        if self.last_seen_before is not None:
            clauses.append(f"NOT {CONNECTED_SQL} AND COALESCE({_LAST_SEEN}, 0) < ?")
            args.append(self.last_seen_before)
        if self.last_seen_after is not None:
            clauses.append(f"({CONNECTED_SQL} OR COALESCE({_LAST_SEEN}, 0) > ?)")
            args.append(self.last_seen_after)
        if self.id_prefix:
            clauses.append("d.id >= ? AND d.id < ?")
            args += [self.id_prefix, self.id_prefix + "\U0010ffff"]
        return clauses, args
