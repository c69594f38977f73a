"""/v1/tenants/{tenant}/groups: device groups, their members and their policy (7/CMP configuration)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from .body import json_body
from .deps import GatewayDep
from .errors import BadRequest
from .schemas.groups import GroupIn, GroupMoveIn, GroupMoveOut, GroupOut, GroupPatch, PolicyOut

router = APIRouter(prefix="/v1/tenants/{tenant}/groups", tags=["groups"])


@router.post("", summary="Create a group", status_code=201)
async def create_group(tenant: str, body: GroupIn, gw: GatewayDep) -> GroupOut:
    """A new, empty group with the empty policy `{}`."""
    return GroupOut.of(await gw.registry.groups.create(tenant, body.id, description=body.description))


@router.get("", summary="List groups")
async def list_groups(tenant: str, gw: GatewayDep) -> list[GroupOut]:
    """Every group of the tenant with its device count."""
    return [GroupOut.of(g) for g in await gw.registry.groups.of_tenant(tenant)]


@router.get("/{group}", summary="Get a group")
async def get_group(tenant: str, group: str, gw: GatewayDep) -> GroupOut:
    """One group with its description and device count."""
    return GroupOut.of(await gw.registry.groups.get(tenant, group))


@router.patch("/{group}", summary="Change a group")
async def patch_group(tenant: str, group: str, body: GroupPatch, gw: GatewayDep) -> GroupOut:
    """Describe or rename (`id`): its devices and the CAs that provision into it follow the rename."""
    return GroupOut.of(await gw.registry.groups.update(tenant, group, new_id=body.id, description=body.description))


@router.delete("/{group}", summary="Delete a group", status_code=204)
async def delete_group(
    tenant: str,
    group: str,
    gw: GatewayDep,
    move_to: Annotated[str | None, Query(alias="moveTo", description="move its devices and CAs here first")] = None,
) -> Response:
    """409 while it has devices (or CAs provision into it), unless `moveTo` names another group."""
    await gw.manage.groups.delete(tenant, group, move_to=move_to)
    return Response(status_code=204)


@router.post("/{group}/devices", summary="Move devices into a group")
async def move_devices(tenant: str, group: str, body: GroupMoveIn, gw: GatewayDep) -> GroupMoveOut:
    """Moves devices (all or none) into the group; those that observe get its policy pushed."""
    return GroupMoveOut(moved=await gw.manage.groups.move(tenant, group, body.devices))


@router.get("/{group}/policy", summary="Get a group's policy")
async def get_policy(tenant: str, group: str, gw: GatewayDep) -> PolicyOut:
    """The group's policy (7/CMP configuration) and its `configId`."""
    return PolicyOut.of(await gw.registry.groups.get(tenant, group))


@router.put(
    "/{group}/policy",
    summary="Replace a group's policy",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def set_policy(tenant: str, group: str, request: Request, gw: GatewayDep) -> PolicyOut:
    """Replaces the policy (a JSON object, at most `policy_max_bytes`); its `configId` is the SHA-256 of
    its canonical form. Connected devices of the group that observe get it pushed."""
    raw = await request.body()
    if len(raw) > gw.settings.policy_max_bytes:
        raise BadRequest(f"policy over {gw.settings.policy_max_bytes} bytes", status=413)
    config = await json_body(request)
    if not isinstance(config, dict):
        raise BadRequest("the policy must be a JSON object", status=422)
    return PolicyOut.of(await gw.manage.groups.set_policy(tenant, group, config))
