"""/v1/tenants/{tenant}/devices"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from registry.device_search import DeviceQuery
from registry.models import DeviceState, to_ms

from .deps import GatewayDep
from .errors import BadRequest
from .schemas.devices import (
    ConnectedDeviceOut,
    ConnectedDevicesOut,
    ConnectionOut,
    DeviceIn,
    DeviceOut,
    DevicePageOut,
    DevicePatch,
    DeviceTombstoneOut,
    HistoryEntryOut,
)

router = APIRouter(prefix="/v1/tenants/{tenant}/devices", tags=["devices"])
rendezvous = APIRouter(prefix="/v1/tenants/{tenant}", tags=["devices"])


@rendezvous.get("/connected-devices", summary="List connected devices")
async def connected_devices(
    tenant: str,
    gw: GatewayDep,
    after: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> ConnectedDevicesOut:
    """Which devices of the tenant are connected now (the rendezvous view), by device id."""
    await gw.registry.tenants.get(tenant)
    rows = await gw.registry.connections.connected_devices(tenant, after=after, limit=limit)
    devices = [ConnectedDeviceOut(id=d, sessions=n, node=node, connected_since=t) for d, n, node, t in rows]
    return ConnectedDevicesOut(devices=devices, next=devices[-1].id if len(devices) == limit else None)


@router.post("", summary="Create a device", status_code=201)
async def create_device(
    tenant: str,
    body: DeviceIn,
    gw: GatewayDep,
    reuse_deleted_id: Annotated[
        bool, Query(alias="reuseDeletedId", description="use the id of a deleted device again, on purpose")
    ] = False,
) -> DeviceOut:
    """A new device in an existing group, `enrolled` until its first credential."""
    device = await gw.registry.devices.create(
        tenant,
        body.id,
        group=body.group,
        app_version=body.app_version,
        attributes=body.attributes,
        node=gw.settings.node_id,
        reuse_deleted_id=reuse_deleted_id,
    )
    return DeviceOut.of(device)


_FILTERS = {
    "after",
    "limit",
    "group",
    "state",
    "enabled",
    "connected",
    "appVersion",
    "autoProvisioned",
    "lastSeenBefore",
    "lastSeenAfter",
    "q",
}


@router.get("", summary="Search devices")
async def list_devices(
    tenant: str,
    request: Request,
    gw: GatewayDep,
    after: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    group: str | None = None,
    state: DeviceState | None = None,
    enabled: bool | None = None,
    connected: bool | None = None,
    app_version: Annotated[str | None, Query(alias="appVersion")] = None,
    auto_provisioned: Annotated[bool | None, Query(alias="autoProvisioned")] = None,
    last_seen_before: Annotated[
        datetime | None, Query(alias="lastSeenBefore", description="not connected now, last seen before (or never)")
    ] = None,
    last_seen_after: Annotated[
        datetime | None, Query(alias="lastSeenAfter", description="connected now, or last seen after")
    ] = None,
    q: Annotated[str | None, Query(description="device id prefix", max_length=128)] = None,
) -> DevicePageOut:
    """A page of the tenant's devices by id, filtered; `attr.<key>=value` and `metadata.<key>=value`
    match attributes and metadata. An unknown parameter is a 422, not ignored."""
    attributes: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith("attr."):
            attributes[name.removeprefix("attr.")] = value
        elif name.startswith("metadata."):
            metadata[name.removeprefix("metadata.")] = value
        elif name not in _FILTERS:
            raise BadRequest(f"unknown filter {name!r}", name, status=422)
    query = DeviceQuery(
        group=group,
        state=state,
        enabled=enabled,
        connected=connected,
        app_version=app_version,
        auto_provisioned=auto_provisioned,
        attributes=attributes,
        metadata=metadata,
        last_seen_before=to_ms(last_seen_before) if last_seen_before else None,
        last_seen_after=to_ms(last_seen_after) if last_seen_after else None,
        id_prefix=q,
    )
    devices, cursor = await gw.registry.devices.search(tenant, query, after=after, limit=limit)
    return DevicePageOut(devices=[DeviceOut.of(d) for d in devices], next=cursor)


@router.get("/{device}", summary="Get a device")
async def get_device(tenant: str, device: str, gw: GatewayDep) -> DeviceOut:
    """The device with its group, app version, attributes, lifecycle state and policy status."""
    return DeviceOut.of(await gw.registry.devices.get(tenant, device))


@router.patch("/{device}", summary="Change a device")
async def patch_device(tenant: str, device: str, body: DevicePatch, gw: GatewayDep) -> DeviceOut:
    """Move it to another group, change its app version, attributes or enabled flag, or send it from
    `provisioned` back to `registered`; absent fields stay. Disabling closes its sessions; a new group's
    policy is pushed to it."""
    kwargs = {"app_version": body.app_version} if "app_version" in body.model_fields_set else {}
    updated = await gw.manage.devices.update(
        tenant,
        device,
        group=body.group,
        attributes=body.attributes,
        enabled=body.enabled,
        state=body.state,
        node=gw.settings.node_id,
        **kwargs,
    )
    return DeviceOut.of(updated)


@router.delete("/{device}", summary="Delete a device", status_code=204)
async def delete_device(tenant: str, device: str, gw: GatewayDep) -> Response:
    """Deletes it with its credentials, metadata and connection records and closes its sessions. A tombstone
    keeps its id (see `reuseDeletedId`); an auto-provisioned device's certificates get tombstones too."""
    await gw.manage.devices.delete(tenant, device)
    return Response(status_code=204)


@router.get("/{device}/connection", summary="Get a device's connection status")
async def get_connection(
    tenant: str, device: str, gw: GatewayDep, log: Annotated[int, Query(ge=0, le=1000)] = 50
) -> ConnectionOut:
    """Connected or not, how many sessions, since when, from where, on which node, and the last `log`
    connection log entries (connects and disconnects with their reasons), newest first."""
    return ConnectionOut.of(await gw.registry.connections.status(tenant, device, log_entries=log))


@router.get("/{device}/history", summary="Get a device's lifecycle history")
async def get_history(
    tenant: str, device: str, gw: GatewayDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[HistoryEntryOut]:
    """The device's lifecycle, newest first: created, state changes (with why), policies applied or failed."""
    entries = await gw.registry.devices.history(tenant, device, limit=limit)
    return [HistoryEntryOut(at=e.at, event=e.event, detail=e.detail) for e in entries]


@rendezvous.get("/deleted-devices", summary="List deleted devices")
async def deleted_devices(tenant: str, gw: GatewayDep) -> list[DeviceTombstoneOut]:
    """Tombstones of deleted devices (newest 1,000): id, group, app version, when."""
    return [
        DeviceTombstoneOut(id=t.device_id, group=t.group, app_version=t.app_version, deleted_at=t.deleted_at)
        for t in await gw.registry.devices.tombstones(tenant)
    ]
