"""What a command's callers, devices and applications are told: refusals, results, command lists."""

from __future__ import annotations

import json
from typing import Any

from registry.errors import Conflict, Invalid, LimitReached, NotFound, RegistryError
from registry.models import Command, CommandState

from ...kp1 import cep
from ...kp1.reply import Kp1Error

TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MIN, TIMEOUT_MS_MAX = 30_000, 1_000, 300_000


class WaitInterrupted(Exception):
    """A caller waiting for a result stops early: its device was deleted (404) or the gateway is
    stopping (503). The command itself is as the registry says."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CommandRefused(Exception):
    """An invocation refused before it reached the registry (type, payload size, timeout)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def check_type(command_type: str) -> None:
    if not cep.TYPE_PATTERN.fullmatch(command_type):
        raise CommandRefused(
            422, f"invalid command type {command_type[:64]!r}: 1-64 of A-Z a-z 0-9 _ -, not only digits", "type"
        )


def result_message(command: Command) -> dict[str, Any]:
    """What the result topic and a finished REST call carry."""
    status = command.status_code if command.status_code is not None else 504
    phrase = command.reason_phrase
    if command.state == CommandState.EXPIRED:
        phrase = "no result before the command's timeout"
    return {
        "id": command.id,
        "state": command.state.value,
        "statusCode": status,
        "reasonPhrase": phrase,
        "payload": command.result,
    }


def refusal_message(command_id: int | None, status: int, reason: str) -> bytes:
    """An invocation that made no command, as its result topic carries it."""
    refusal = {"id": command_id, "state": "refused", "statusCode": status, "reasonPhrase": reason, "payload": None}
    return json.dumps(refusal, separators=(",", ":")).encode()


def commands_json(commands: list[Command]) -> bytes:
    """Commands as a device fetches them, or is pushed them."""
    return json.dumps([{"id": c.id, "payload": c.payload} for c in commands], separators=(",", ":")).encode()


def status_of(exc: CommandRefused | RegistryError) -> int:
    """The HTTP status an invocation refused this way gets."""
    if isinstance(exc, CommandRefused):
        return exc.status
    statuses: dict[type[RegistryError], int] = {NotFound: 404, Conflict: 409, LimitReached: 429, Invalid: 422}
    return statuses.get(type(exc), 400)


def result_topic_refusal(exc: Exception) -> tuple[int, str]:
    """(status, reason) for the result topic: 400 where REST says 422 (1/KP has no 422)."""
    if isinstance(exc, Kp1Error):
        return exc.status, exc.phrase
    assert isinstance(exc, (CommandRefused, RegistryError))
    status = status_of(exc)
    return (400 if status == 422 else status), exc.message
