"""/v1/tenants/{tenant}/service-accounts: credentials with role `service` that read the tenant's events."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Response

from .deps import GatewayDep
from .schemas.service_accounts import ServiceAccountIn, ServiceAccountOut

router = APIRouter(prefix="/v1/tenants/{tenant}/service-accounts", tags=["service accounts"])


@router.post("", summary="Create a service account", status_code=201)
async def create_service_account(tenant: str, body: ServiceAccountIn, gw: GatewayDep) -> ServiceAccountOut:
    """The password is shown once, here; only its hash is kept."""
    password = secrets.token_urlsafe(24)
    account = await gw.registry.service_accounts.create(tenant, body.id, await gw.services.hasher.hash(password))
    return ServiceAccountOut(id=account.id, username=f"{account.id}@{tenant}", password=password)


@router.get("", summary="List service accounts")
async def list_service_accounts(tenant: str, gw: GatewayDep) -> list[ServiceAccountOut]:
    """The tenant's service accounts with their MQTT usernames (never a password)."""
    return [
        ServiceAccountOut(id=a, username=f"{a}@{tenant}", password=None)
        for a in await gw.registry.service_accounts.list(tenant)
    ]


@router.delete("/{account}", summary="Delete a service account", status_code=204)
async def delete_service_account(tenant: str, account: str, gw: GatewayDep) -> Response:
    """Deletes the account and closes its sessions."""
    await gw.manage.service_accounts.delete(tenant, account)
    return Response(status_code=204)
