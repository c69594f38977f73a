"""11/CEP commands' bodies (api/commands.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from registry.models import Command, CommandState

from ...services.commands.messages import result_message
from .base import Body


class CommandIn(Body):
    payload: Any = Field(None, description="any JSON value, handed to the device as it is")
    timeout_ms: int = Field(30_000, ge=1_000, le=300_000, description="the command expires unanswered after this")


class CommandAccepted(Body):
    id: int
    state: CommandState


class CommandResultOut(Body):
    """A finished command: the device's status code, reason and result payload (504 when it expired)."""

    id: int
    state: CommandState
    status_code: int | None
    reason_phrase: str | None
    payload: Any

    @classmethod
    def of(cls, c: Command) -> CommandResultOut:
        return cls(**result_message(c))


class CommandOut(Body):
    id: int
    type: str
    state: CommandState
    status_code: int | None
    reason_phrase: str | None
    payload: Any
    """The device's result payload."""
    command_payload: Any
    origin: str
    created_at: datetime
    deadline: datetime
    delivered_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, c: Command) -> CommandOut:
        return cls(
            id=c.id,
            type=c.type,
            state=c.state,
            status_code=c.status_code,
            reason_phrase=c.reason_phrase,
            payload=c.result,
            command_payload=c.payload,
            origin=c.origin,
            created_at=c.created_at,
            deadline=c.deadline,
            delivered_at=c.delivered_at,
            completed_at=c.completed_at,
        )
