"""/v1/tenants"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from .deps import GatewayDep
from .schemas.tenants import RETAINED_LIMITS, TenantIn, TenantOut, TenantPatch

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", summary="Create a tenant", status_code=201)
async def create_tenant(body: TenantIn, gw: GatewayDep) -> TenantOut:
    """A new, enabled tenant with its `default` group. `maxDevices` and `maxConnections` cap its fleet
    and its sessions, `maxRetainedMessages` and `maxRetainedBytes` its retained messages on a node
    (unset: its share of the node's); `forwardExtensions` names 1/KP extensions whose publishes reach
    its applications."""
    tenant = await gw.manage.tenants.create(
        body.id,
        max_devices=body.max_devices,
        max_connections=body.max_connections,
        max_retained_messages=body.max_retained_messages,
        max_retained_bytes=body.max_retained_bytes,
        forward_extensions=body.forward_extensions,
    )
    return TenantOut.of(tenant)


@router.get("", summary="List tenants")
async def list_tenants(gw: GatewayDep) -> list[TenantOut]:
    """Every tenant, with its limits and forwarded extensions."""
    return [TenantOut.of(t) for t in await gw.registry.tenants.list()]


@router.get("/{tenant}", summary="Get a tenant")
async def get_tenant(tenant: str, gw: GatewayDep) -> TenantOut:
    """One tenant; 404 when there is none with this id."""
    return TenantOut.of(await gw.registry.tenants.get(tenant))


@router.patch("/{tenant}", summary="Change a tenant")
async def patch_tenant(tenant: str, body: TenantPatch, gw: GatewayDep) -> TenantOut:
    """Enable or disable it, change its limits or forwarded extensions; absent fields stay. Disabling
    closes its sessions and stops trusting its CAs."""
    fields = body.model_fields_set
    kwargs: dict[str, Any] = {
        name: getattr(body, name) for name in ("max_devices", "max_connections", *RETAINED_LIMITS) if name in fields
    }
    if body.forward_extensions is not None:
        kwargs["forward_extensions"] = body.forward_extensions
    return TenantOut.of(await gw.manage.tenants.update(tenant, enabled=body.enabled, **kwargs))


@router.delete("/{tenant}", summary="Delete a tenant", status_code=204)
async def delete_tenant(tenant: str, gw: GatewayDep) -> Response:
    """Deletes it with its devices, credentials, metadata and connection records, and closes its sessions."""
    await gw.manage.tenants.delete(tenant)
    return Response(status_code=204)
