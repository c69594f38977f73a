"""11/CEP on the device side: `kp1/<app version>/cex/<token>/command/<type>[/<request id>]` (fetch and
observe commands) and `.../result/<type>[/<request id>]` (report results). The wire format only; what
happens to commands is gateway/services/commands/."""

from __future__ import annotations

import re
from typing import Any

from registry.commands import ResultIn

from ..node.settings import GatewaySettings
from .payload import JsonReader, PayloadError
from .reply import Kp1Error
from .topic import MAX_REQUEST_ID

EXTENSION = "cex"
TYPE_PATTERN = re.compile(r"(?=.*[A-Za-z_-])[A-Za-z0-9_-]{1,64}")
"""Letters, digits, '_' and '-', not digits only (a trailing number in a 1/KP topic is a request id)."""
MAX_REASON_PHRASE = 1024
FETCH, RESULT = "command", "result"


def resource(path: str) -> tuple[str, str]:
    """(`command` or `result`, the command type) of a request path."""
    levels = path.split("/")
    if len(levels) != 3 or levels[1] not in (FETCH, RESULT):
        raise Kp1Error(404, f"unknown resource {path or '(empty)'!r}: command/<type> or result/<type>")
    if not TYPE_PATTERN.fullmatch(levels[2]):
        raise Kp1Error(400, f"invalid command type {levels[2][:64]!r}")
    return levels[1], levels[2]


def parse_json_payload(payload: bytes, settings: GatewaySettings, read: JsonReader) -> Any:
    if len(payload) > settings.commands_max_payload_bytes:
        raise Kp1Error(413, f"payload over {settings.commands_max_payload_bytes} bytes")
    try:
        return read(payload)
    except PayloadError as exc:
        raise Kp1Error(exc.status, str(exc)) from None


def parse_fetch(payload: bytes, settings: GatewaySettings, read: JsonReader) -> bool | None:
    """The `observe` of a command request: None when not given (empty payload or `{}`)."""
    if not payload.strip():
        return None
    body = parse_json_payload(payload, settings, read)
    if not isinstance(body, dict) or set(body) - {"observe"} or not isinstance(body.get("observe", True), bool):
        raise Kp1Error(400, 'payload must be empty, {} or {"observe": true|false}')
    observe = body.get("observe")
    return observe if isinstance(observe, bool) else None


_RESULT_KEYS = frozenset({"id", "statusCode", "reasonPhrase", "payload"})


def parse_results(payload: bytes, settings: GatewaySettings, read: JsonReader) -> list[ResultIn]:
    """A JSON array of `{"id", "statusCode", "reasonPhrase"?, "payload"?}`; one bad element refuses all."""
    value = parse_json_payload(payload, settings, read)
    if not isinstance(value, list) or not value:
        raise Kp1Error(400, 'payload must be a non-empty JSON array of {"id", "statusCode", ...}')
    if len(value) > settings.commands_max_outstanding:
        raise Kp1Error(413, f"more than {settings.commands_max_outstanding} results in one request")
    results, seen = [], set()
    for index, item in enumerate(value):
        where = f"result [{index}]"
        if not isinstance(item, dict) or set(item) - _RESULT_KEYS:
            raise Kp1Error(400, f"{where}: an object with id, statusCode, reasonPhrase and payload only")
        command_id, status, phrase = item.get("id"), item.get("statusCode"), item.get("reasonPhrase")
        if not isinstance(command_id, int) or not positive_int(command_id) or command_id in seen:
            raise Kp1Error(400, f"{where}: id must be a positive integer, once per request")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise Kp1Error(400, f"{where}: statusCode must be an integer 100-599")
        if phrase is not None and (not isinstance(phrase, str) or len(phrase) > MAX_REASON_PHRASE):
            raise Kp1Error(400, f"{where}: reasonPhrase must be a string of at most {MAX_REASON_PHRASE} characters")
        seen.add(command_id)
        results.append(ResultIn(command_id, status, phrase, item.get("payload")))
    return results


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_REQUEST_ID
