"""/v1/tenants"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from .deps import GatewayDep
from .schemas import TenantIn, TenantOut, TenantPatch

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201)
async def create_tenant(body: TenantIn, gw: GatewayDep) -> TenantOut:
    tenant = await gw.manage.tenants.create(
        body.id,
        max_devices=body.max_devices,
        max_connections=body.max_connections,
        forward_extensions=body.forward_extensions,
    )
    return TenantOut.of(tenant)


@router.get("")
async def list_tenants(gw: GatewayDep) -> list[TenantOut]:
    return [TenantOut.of(t) for t in await gw.registry.tenants.list()]


@router.get("/{tenant}")
async def get_tenant(tenant: str, gw: GatewayDep) -> TenantOut:
    return TenantOut.of(await gw.registry.tenants.get(tenant))


@router.patch("/{tenant}")
async def patch_tenant(tenant: str, body: TenantPatch, gw: GatewayDep) -> TenantOut:
    fields = body.model_fields_set
    kwargs: dict[str, Any] = {
        name: getattr(body, name) for name in ("max_devices", "max_connections") if name in fields
    }
    if body.forward_extensions is not None:
        kwargs["forward_extensions"] = body.forward_extensions
    return TenantOut.of(await gw.manage.tenants.update(tenant, enabled=body.enabled, **kwargs))


@router.delete("/{tenant}", status_code=204)
async def delete_tenant(tenant: str, gw: GatewayDep) -> Response:
    await gw.manage.tenants.delete(tenant)
    return Response(status_code=204)
