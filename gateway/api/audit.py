"""`GET /v1/audit` (the entries of the audit trail) and `GET /v1/audit/refusals` (what was counted
instead of written: writes without the admin token, refused MQTT invocations). The middleware that
records them is audit_trail.py."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from registry.models import AuditRefusal

from .deps import GatewayDep
from .schemas import AuditPageOut, Body

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


class AuditRefusalOut(Body):
    id: int
    minute: datetime = Field(description="the start of the minute counted")
    source: str = Field(description="the client's address (IPv6: its /64), or service:<account>@<tenant>")
    actor: str = Field(description="anonymous, anonymous (wrong token) or service:<account>@<tenant>")
    status: int
    count: int = Field(description="how many of this source, actor and status in the minute")
    tenant: str | None = Field(description="a service account's tenant (never taken from an anonymous request)")
    action: str = Field(description="what the first of them tried")
    target: str
    detail: str | None

    @classmethod
    def of(cls, r: AuditRefusal) -> AuditRefusalOut:
        return cls(
            id=r.id,
            minute=r.minute,
            source=r.source,
            actor=r.actor,
            status=r.status,
            count=r.count,
            tenant=r.tenant_id,
            action=r.action,
            target=r.target,
            detail=r.detail,
        )


class AuditRefusalsPageOut(Body):
    refusals: list[AuditRefusalOut]
    next: int | None = Field(description="pass as `after` for the next page; null on the last")


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
