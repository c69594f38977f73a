"""Tenants' bodies (api/tenants.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator

from registry.models import Tenant

from ...services.data import RESERVED_EXTENSIONS
from .base import Body, ForwardExtensions, Id, MaxDevices


def _forwardable(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    reserved = sorted(set(value) & RESERVED_EXTENSIONS)
    if reserved:
        raise ValueError(f"{', '.join(reserved)} handled by the gateway itself; cannot be forwarded")
    if len(set(value)) != len(value):
        raise ValueError("an extension is listed twice")
    return value


RETAINED_LIMITS = ("max_retained_messages", "max_retained_bytes")


MaxRetainedMessages = Annotated[
    int, Field(ge=0, le=100_000_000, description="retained messages its devices may leave on a node")
]


MaxRetainedBytes = Annotated[int, Field(ge=0, le=2**40, description="their topic and payload bytes on a node")]


class TenantIn(Body):
    id: Id
    max_devices: MaxDevices | None = None
    max_connections: int | None = Field(None, ge=0, le=10_000_000)
    max_retained_messages: MaxRetainedMessages | None = None
    max_retained_bytes: MaxRetainedBytes | None = None
    forward_extensions: ForwardExtensions | None = Field(
        None, description="1/KP extensions (besides dcx) whose device publishes reach the tenant's applications"
    )

    _forwardable = field_validator("forward_extensions")(_forwardable)


class TenantPatch(Body):
    enabled: bool | None = None
    max_devices: MaxDevices | None = None
    max_connections: int | None = Field(None, ge=0, le=10_000_000)
    max_retained_messages: MaxRetainedMessages | None = None
    max_retained_bytes: MaxRetainedBytes | None = None
    forward_extensions: ForwardExtensions | None = None

    _forwardable = field_validator("forward_extensions")(_forwardable)


class TenantOut(Body):
    id: str
    enabled: bool
    max_devices: int | None
    max_connections: int | None
    max_retained_messages: int | None
    max_retained_bytes: int | None
    forward_extensions: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, t: Tenant) -> TenantOut:
        return cls(
            id=t.id,
            enabled=t.enabled,
            max_devices=t.max_devices,
            max_connections=t.max_connections,
            max_retained_messages=t.max_retained_messages,
            max_retained_bytes=t.max_retained_bytes,
            forward_extensions=t.forward_extensions,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )
