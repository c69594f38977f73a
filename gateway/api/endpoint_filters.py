"""/v1/tenants/{tenant}/endpoint-filters: saved device queries whose members are kept up to date, with
18/EFE events (`filter/activated|deactivated`, `endpoint/matched|unmatched`) on the tenant's topics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from .body import model_body
from .deps import GatewayDep
from .schemas.endpoint_filters import (
    EndpointFilterIn,
    EndpointFilterOut,
    EndpointFilterQueryIn,
    FilterEndpointOut,
    FilterEndpointsOut,
)

router = APIRouter(prefix="/v1/tenants/{tenant}/endpoint-filters", tags=["endpoint filters"])


@router.post(
    "",
    summary="Create an endpoint filter",
    status_code=201,
    response_model=EndpointFilterOut,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": EndpointFilterIn.model_json_schema()}}}},
)
async def create_filter(tenant: str, request: Request, gw: GatewayDep) -> EndpointFilterOut:
    """Saves a filter. It is `pending` while the gateway evaluates it over the tenant's devices, then
    `active` with a `filter/activated` event. A query the language does not allow is a 422 whose
    `field` is a JSON Pointer to the offending place."""
    body = await model_body(request, EndpointFilterIn)
    return EndpointFilterOut.of(await gw.registry.endpoint_filters.create(tenant, body.id, body.query))


@router.get("", summary="List endpoint filters")
async def list_filters(tenant: str, gw: GatewayDep) -> list[EndpointFilterOut]:
    """Every filter of the tenant with its state and how many devices match it."""
    return [EndpointFilterOut.of(f) for f in await gw.registry.endpoint_filters.of_tenant(tenant)]


@router.get("/{filter_id}", summary="Get an endpoint filter")
async def get_filter(tenant: str, filter_id: str, gw: GatewayDep) -> EndpointFilterOut:
    """One filter with its state and how many devices match it."""
    return EndpointFilterOut.of(await gw.registry.endpoint_filters.get(tenant, filter_id))


@router.put(
    "/{filter_id}",
    summary="Replace an endpoint filter's query",
    response_model=EndpointFilterOut,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": EndpointFilterQueryIn.model_json_schema()}}}
    },
)
async def replace_filter(tenant: str, filter_id: str, request: Request, gw: GatewayDep) -> EndpointFilterOut:
    """A new query: `filter/deactivated` (reason `updated`), pending again until re-evaluated."""
    body = await model_body(request, EndpointFilterQueryIn)
    node = gw.settings.node_id
    return EndpointFilterOut.of(await gw.registry.endpoint_filters.replace(tenant, filter_id, body.query, node=node))


@router.delete("/{filter_id}", summary="Delete an endpoint filter", status_code=204)
async def delete_filter(tenant: str, filter_id: str, gw: GatewayDep) -> Response:
    """`filter/deactivated` (reason `deleted`); no per-device events."""
    await gw.registry.endpoint_filters.delete(tenant, filter_id, node=gw.settings.node_id)
    return Response(status_code=204)


@router.get("/{filter_id}/endpoints", summary="List an endpoint filter's devices")
async def filter_endpoints(
    tenant: str,
    filter_id: str,
    gw: GatewayDep,
    after: Annotated[str, Query(description="`next` of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FilterEndpointsOut:
    """The devices that match the filter now, by id, a page at a time."""
    found, members = await gw.registry.endpoint_filters.members(tenant, filter_id, after=after, limit=limit)
    return FilterEndpointsOut(
        state=found.state,
        endpoints=[FilterEndpointOut.of(m) for m in members],
        next=members[-1].endpoint_id if len(members) == limit else None,
    )
