"""/v1/tenants/{tenant}/devices/{device}/metadata: operators read and write any key (no whitelist);
the same key rules, limits and `metadata updated` events as 10/EPMP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ..kp1.epmp import change_metadata
from ..kp1.reply import Kp1Error
from ..kp1.whitelist import KEY_PATTERN
from .body import json_body
from .deps import GatewayDep
from .errors import BadRequest

router = APIRouter(prefix="/v1/tenants/{tenant}/devices/{device}/metadata", tags=["metadata"])


async def _object(request: Request) -> dict[str, Any]:
    value = await json_body(request)
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object of key -> value")
    _check_keys(list(value))
    return value


def _check_keys(keys: list[str]) -> None:
    for key in keys:
        if not KEY_PATTERN.fullmatch(key):
            raise BadRequest(f"invalid key name {key!r}: letters, digits and '_' only", "keys", status=422)


async def _apply(gw: GatewayDep, tenant: str, device: str, mutate: Any) -> dict[str, Any]:
    try:
        await change_metadata(gw.registry, gw.settings, tenant, device, mutate)
    except Kp1Error as exc:
        raise BadRequest(exc.phrase, status=exc.status) from None
    return await gw.registry.metadata.get(tenant, device)


@router.get("", summary="Get a device's metadata")
async def get_metadata(tenant: str, device: str, gw: GatewayDep) -> dict[str, Any]:
    """Every metadata key and value of the device (operators see all keys; the whitelist binds devices only)."""
    return await gw.registry.metadata.get(tenant, device)


@router.put(
    "",
    summary="Replace a device's metadata",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def replace_metadata(tenant: str, device: str, request: Request, gw: GatewayDep) -> dict[str, Any]:
    """Full replace: keys not in the body are removed."""
    new = await _object(request)
    return await _apply(gw, tenant, device, lambda _current: new)


@router.patch(
    "",
    summary="Update a device's metadata",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def update_metadata(tenant: str, device: str, request: Request, gw: GatewayDep) -> dict[str, Any]:
    """Partial update: top-level keys replaced, no deep merge."""
    new = await _object(request)
    return await _apply(gw, tenant, device, lambda current: {**current, **new})


@router.delete("", summary="Delete metadata keys")
async def delete_metadata(
    tenant: str, device: str, gw: GatewayDep, keys: Annotated[str, Query(description="comma-separated key names")]
) -> dict[str, Any]:
    """Removes the keys named in `keys` (absent ones are ignored) and answers the metadata left."""
    names = [k for k in keys.split(",") if k]
    if not names:
        raise BadRequest("keys: at least one key name", "keys", status=422)
    _check_keys(names)
    return await _apply(gw, tenant, device, lambda current: {k: v for k, v in current.items() if k not in names})
