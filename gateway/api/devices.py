"""/v1/tenants/{tenant}/devices"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from .deps import GatewayDep
from .schemas import ConnectedDeviceOut, ConnectedDevicesOut, ConnectionOut, DeviceIn, DeviceOut, DevicePatch

router = APIRouter(prefix="/v1/tenants/{tenant}/devices", tags=["devices"])
rendezvous = APIRouter(prefix="/v1/tenants/{tenant}", tags=["devices"])


@rendezvous.get("/connected-devices")
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


@router.post("", status_code=201)
async def create_device(tenant: str, body: DeviceIn, gw: GatewayDep) -> DeviceOut:
    device = await gw.registry.devices.create(
        tenant,
        body.id,
        group=body.group,
        app_version=body.app_version,
        attributes=body.attributes,
        node=gw.settings.node_id,
    )
    return DeviceOut.of(device)


@router.get("")
async def list_devices(
    tenant: str,
    gw: GatewayDep,
    after: Annotated[str | None, Query(description="last device id of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeviceOut]:
    return [DeviceOut.of(d) for d in await gw.registry.devices.list(tenant, after=after, limit=limit)]


@router.get("/{device}")
async def get_device(tenant: str, device: str, gw: GatewayDep) -> DeviceOut:
    return DeviceOut.of(await gw.registry.devices.get(tenant, device))


@router.patch("/{device}")
async def patch_device(tenant: str, device: str, body: DevicePatch, gw: GatewayDep) -> DeviceOut:
    kwargs = {"app_version": body.app_version} if "app_version" in body.model_fields_set else {}
    updated = await gw.manage.devices.update(
        tenant, device, group=body.group, attributes=body.attributes, enabled=body.enabled, **kwargs
    )
    return DeviceOut.of(updated)


@router.delete("/{device}", status_code=204)
async def delete_device(tenant: str, device: str, gw: GatewayDep) -> Response:
    await gw.manage.devices.delete(tenant, device)
    return Response(status_code=204)


@router.get("/{device}/connection")
async def get_connection(
    tenant: str, device: str, gw: GatewayDep, log: Annotated[int, Query(ge=0, le=1000)] = 50
) -> ConnectionOut:
    return ConnectionOut.of(await gw.registry.connections.status(tenant, device, log_entries=log))
