"""`GET /v1/audit` (the entries of the audit trail) and `GET /v1/audit/refusals` (what was counted
instead of written: writes without the admin token, refused MQTT invocations). The middleware that
records them is audit_trail.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .deps import GatewayDep
from .schemas.audit import AuditPageOut, AuditRefusalOut, AuditRefusalsPageOut

router = APIRouter(tags=["operations"])
TenantQuery = Annotated[str | None, Query(description="only this tenant's")]
AfterQuery = Annotated[int, Query(ge=0, description="`next` of the previous page")]
LimitQuery = Annotated[int, Query(ge=1, le=1000)]


@router.get("/v1/audit", summary="Read the audit trail")
async def read_audit(
    gw: GatewayDep, tenant: TenantQuery = None, after: AfterQuery = 0, limit: LimitQuery = 100
) -> AuditPageOut:
    """Management writes and applications' command invocations, oldest first: who (`actor`), what
    (`action`, the operation), on what (`target`: for a create, what it created), and how it ended
    (`status`, `detail` for a refusal). Writes without the admin token are at `/v1/audit/refusals`."""
    entries = await gw.registry.audit.page(tenant_id=tenant, after=after, limit=limit)
    return AuditPageOut.of(entries, limit)


@router.get("/v1/audit/refusals", summary="Read the counted refusals")
async def read_refusals(
    gw: GatewayDep, tenant: TenantQuery = None, after: AfterQuery = 0, limit: LimitQuery = 100
) -> AuditRefusalsPageOut:
    """Writes without the admin token and refused MQTT command invocations, counted per source, actor,
    status and minute (`(other addresses)` / `(other accounts)` past `audit_refusal_sources_per_minute`
    sources in a minute), in the order they first came. Counts are at most seconds old: reading
    writes the ones not yet written."""
    await gw.services.refusals.flush()
    found = await gw.registry.audit.refusals(tenant_id=tenant, after=after, limit=limit)
    return AuditRefusalsPageOut(
        refusals=[AuditRefusalOut.of(r) for r in found], next=found[-1].id if len(found) == limit else None
    )
