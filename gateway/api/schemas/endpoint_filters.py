"""Endpoint filters' bodies (api/endpoint_filters.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from registry.models import EndpointFilter, EndpointFilterState, FilterMember

from .base import Body, Id


class EndpointFilterIn(Body):
    id: Id
    query: dict[str, Any] = Field(
        description="fields group, state, enabled, connected, appVersion, attr.<key>, metadata.<key>;"
        " operators $eq $ne $in $nin $exists $gt $gte $lt $lte; $and / $or (docs/fleet.md)",
        examples=[{"metadata.city": "Kyiv", "connected": True, "appVersion": {"$in": ["v1", "v2"]}}],
    )


class EndpointFilterQueryIn(Body):
    query: dict[str, Any]


class EndpointFilterOut(Body):
    id: str
    query: dict[str, Any]
    state: EndpointFilterState = Field(description="pending while its first scan runs, then active")
    matching: int = Field(description="devices in it now (while pending: found so far)")
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None

    @classmethod
    def of(cls, f: EndpointFilter) -> EndpointFilterOut:
        return cls(
            id=f.id,
            query=f.query,
            state=f.state,
            matching=f.matching,
            created_at=f.created_at,
            updated_at=f.updated_at,
            activated_at=f.activated_at,
        )


class FilterEndpointOut(Body):
    endpoint_id: str
    app_version_name: str | None
    matched_at: datetime

    @classmethod
    def of(cls, m: FilterMember) -> FilterEndpointOut:
        return cls(endpoint_id=m.endpoint_id, app_version_name=m.app_version, matched_at=m.matched_at)


class FilterEndpointsOut(Body):
    state: EndpointFilterState = Field(description="pending: the list is not complete yet")
    endpoints: list[FilterEndpointOut]
    next: str | None = Field(description="pass as `after` for the next page; null on the last")
