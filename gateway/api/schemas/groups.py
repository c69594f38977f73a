"""Groups' and policies' bodies (api/groups.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from registry.models import Group

from .base import Body, Id


class GroupIn(Body):
    id: Id
    description: str = Field("", max_length=1024)


class GroupPatch(Body):
    id: Id | None = Field(None, description="a new id: the group's devices and CAs follow")
    description: str | None = Field(None, max_length=1024)


class GroupOut(Body):
    id: str
    description: str
    config_id: str
    devices: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, g: Group) -> GroupOut:
        return cls(
            id=g.id,
            description=g.description,
            config_id=g.config_id,
            devices=g.devices,
            created_at=g.created_at,
            updated_at=g.updated_at,
        )


class GroupMoveIn(Body):
    devices: list[Id] = Field(min_length=1, max_length=10_000)


class GroupMoveOut(Body):
    moved: list[str]


class PolicyOut(Body):
    config_id: str
    config: dict[str, Any]

    @classmethod
    def of(cls, g: Group) -> PolicyOut:
        return cls(config_id=g.config_id, config=g.config)
