"""The audit trail's pages (api/audit.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from registry.models import AuditEntry, AuditRefusal

from .base import Body


class AuditEntryOut(Body):
    id: int
    at: datetime
    actor: str = Field(description="admin:<digest of the admin token>, service:<account>@<tenant> or anonymous")
    action: str = Field(description='the operation, as "METHOD /path/{template}"')
    tenant: str | None
    target: str
    status: int
    detail: str | None

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            tenant=e.tenant_id,
            target=e.target,
            status=e.status,
            detail=e.detail,
        )


class AuditPageOut(Body):
    entries: list[AuditEntryOut]
    next: int | None = Field(description="pass as `after` for the next page; null on the last")

    @classmethod
    def of(cls, entries: list[AuditEntry], limit: int) -> AuditPageOut:
        return cls(
            entries=[AuditEntryOut.of(e) for e in entries], next=entries[-1].id if len(entries) == limit else None
        )


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
