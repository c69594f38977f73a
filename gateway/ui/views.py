"""What each dashboard page shows, read from the registry and the node's memory; no HTML here."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from registry.connections import Presence
from registry.device_search import DeviceQuery
from registry.identifiers import is_valid_id
from registry.models import ConnectionStatus, Device, DeviceState, Tenant, TrustedCa, from_ms, now_ms

if TYPE_CHECKING:
    from ..node.runtime import Gateway

HOUR_MS = 3_600_000
PAGE = 50
_CONNECTED = {"": None, "yes": True, "no": False}


class BadFilter(ValueError):
    """A search parameter the device table cannot use: said on the page, not a 500."""


@dataclass(frozen=True)
class DeviceFilters:
    q: str = ""
    state: str = ""
    group: str = ""
    connected: str = ""
    after: str = ""

    @classmethod
    def parse(cls, params: dict[str, str]) -> DeviceFilters:
        """Unknown parameters are ignored (a browser adds none of its own, but bookmarks outlive fields)."""
        values = {name: params.get(name, "").strip() for name in ("q", "state", "group", "connected", "after")}
        for name, value in values.items():
            if len(value) > 128:
                raise BadFilter(f"{name}: at most 128 characters")
        if values["state"] and values["state"] not in {s.value for s in DeviceState}:
            raise BadFilter(f"state: one of {', '.join(s.value for s in DeviceState)}")
        if values["connected"] not in _CONNECTED:
            raise BadFilter("connected: yes, no or empty")
        for name in ("group", "after"):
            if values[name] and not is_valid_id(values[name]):
                raise BadFilter(f"{name}: not a valid id")
        return cls(**values)

    def query(self) -> DeviceQuery:
        return DeviceQuery(
            group=self.group or None,
            state=DeviceState(self.state) if self.state else None,
            connected=_CONNECTED[self.connected],
            id_prefix=self.q or None,
        )

    def query_string(self, **changes: str) -> str:
        """`?...` with these filters (and changes), empty values left out."""
        values = {k: v for k, v in {**self.__dict__, **changes}.items() if v}
        return f"?{urlencode(values)}" if values else ""


@dataclass
class HourActivity:
    """The last hour, by reason: connects, disconnects, refused CONNECTs."""

    connects: int = 0
    disconnects: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class TenantRow:
    tenant: Tenant
    connected: int
    hour: HourActivity


@dataclass(frozen=True)
class Overview:
    node: str
    tenants: list[TenantRow]
    unattributed_refusals: Counter[str]
    """Refusals of the last hour that name no tenant (an unknown token, a malformed CONNECT)."""


@dataclass(frozen=True)
class Provisioned:
    device_id: str
    at: datetime


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    presence: Presence


@dataclass(frozen=True)
class TenantView:
    tenant: Tenant
    connected: int
    hour: HourActivity
    provisioned: list[Provisioned]
    provisioned_count: int
    devices: list[DeviceRow]
    next_page: str | None
    """The query string of the next page of the device table."""
    groups: list[str]
    trusted_cas: list[TrustedCa]


@dataclass(frozen=True)
class LastData:
    received_at: datetime
    app_version: str
    sample: str
    """Pretty JSON text."""
    messages: int


@dataclass(frozen=True)
class DeviceView:
    device: Device
    connection: ConnectionStatus
    metadata: dict[str, str]
    """key -> JSON text of its value."""
    last_data: LastData | None


async def _activity(gw: Gateway, tenant_id: str | None) -> dict[str | None, HourActivity]:
    since = now_ms() - HOUR_MS
    hours: dict[str | None, HourActivity] = {}
    for row in await gw.registry.connections.activity_since(since, tenant_id):
        hour = hours.setdefault(row.tenant_id, HourActivity())
        if row.event == "connected":
            hour.connects += row.count
        else:
            hour.disconnects[row.reason or "unknown"] += row.count
    for tenant, reasons in gw.services.metrics.recent_refusals.last_hour().items():
        if tenant_id is None or tenant == tenant_id:
            hours.setdefault(tenant, HourActivity()).refusals.update(reasons)
    return hours


async def overview(gw: Gateway) -> Overview:
    tenants = await gw.registry.tenants.list()
    connected = await gw.registry.connections.connected_counts()
    hours = await _activity(gw, None)
    unattributed = hours[None].refusals if None in hours else Counter[str]()
    rows = [TenantRow(t, connected.get(t.id, 0), hours.get(t.id, HourActivity())) for t in tenants]
    return Overview(gw.settings.node_id, rows, unattributed)


async def tenant_view(gw: Gateway, tenant_id: str, filters: DeviceFilters) -> TenantView:
    tenant = await gw.registry.tenants.get(tenant_id)
    devices, cursor = await gw.registry.devices.search(
        tenant_id, filters.query(), after=filters.after or None, limit=PAGE
    )
    presence = await gw.registry.connections.presence(tenant_id, [d.id for d in devices])
    newest, provisioned_count = await gw.registry.recently_auto_provisioned(tenant_id, now_ms() - HOUR_MS)
    provisioned = [Provisioned(device_id, from_ms(at)) for at, device_id in newest]
    return TenantView(
        tenant=tenant,
        connected=(await gw.registry.connections.connected_counts(tenant_id)).get(tenant_id, 0),
        hour=(await _activity(gw, tenant_id)).get(tenant_id, HourActivity()),
        provisioned=provisioned,
        provisioned_count=provisioned_count,
        devices=[DeviceRow(d, presence.get(d.id, Presence(0, None))) for d in devices],
        next_page=filters.query_string(after=cursor) if cursor else None,
        groups=[g.id for g in await gw.registry.groups.of_tenant(tenant_id)],
        trusted_cas=await gw.registry.trusted_cas.list(tenant_id),
    )


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


async def device_view(gw: Gateway, tenant_id: str, device_id: str) -> DeviceView:
    device = await gw.registry.devices.get(tenant_id, device_id)
    connection = await gw.registry.connections.status(tenant_id, device_id, log_entries=50)
    metadata = await gw.registry.metadata.get(tenant_id, device_id)
    data = gw.services.data
    last = data.last(tenant_id, device_id) if data is not None else None
    last_data = (
        LastData(from_ms(last.received_at), last.app_version, _json(json.loads(last.sample)), last.messages)
        if last is not None
        else None
    )
    return DeviceView(device, connection, {k: _json(v) for k, v in sorted(metadata.items())}, last_data)
