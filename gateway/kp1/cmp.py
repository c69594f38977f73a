"""7/CMP on the device side: `kp1/<app version>/cmx/<token>/config/json[/<request id>]` (get, and
observe, the group's policy) and `.../applied/json[/<request id>]` (report applying it). The wire
format only; the policies themselves are gateway/services/policies.py."""

from __future__ import annotations

from dataclasses import dataclass

from ..node.settings import GatewaySettings
from .payload import JsonReader, PayloadError
from .reply import Kp1Error

EXTENSION = "cmx"
CONFIG, APPLIED = "/config/json", "/applied/json"
PUSH_REST = "config/json/status"
"""Where a device that observes gets its policy pushed (`kp1/<appver>/cmx/<token>/` + this)."""
MAX_REASON_PHRASE = 1024


@dataclass(frozen=True, slots=True)
class ConfigRequest:
    config_id: str | None
    """The config id the device has: answered `{}` when it is still the current one."""
    observe: bool | None


@dataclass(frozen=True, slots=True)
class Applied:
    config_id: str
    status_code: int
    reason_phrase: str | None


def _object(payload: bytes, settings: GatewaySettings, read: JsonReader, allowed: set[str]) -> dict[str, object]:
    if len(payload) > settings.policy_max_bytes:
        raise Kp1Error(413, f"payload over {settings.policy_max_bytes} bytes")
    if not payload.strip():
        return {}
    try:
        value = read(payload)
    except PayloadError as exc:
        raise Kp1Error(exc.status, str(exc)) from None
    if not isinstance(value, dict) or set(value) - allowed:
        raise Kp1Error(400, f"payload must be a JSON object with only {', '.join(sorted(allowed))}")
    return value


def parse_config_request(payload: bytes, settings: GatewaySettings, read: JsonReader) -> ConfigRequest:
    body = _object(payload, settings, read, {"configId", "observe"})
    config_id, observe = body.get("configId"), body.get("observe")
    if config_id is not None and not isinstance(config_id, str):
        raise Kp1Error(400, "configId must be a string")
    if observe is not None and not isinstance(observe, bool):
        raise Kp1Error(400, "observe must be true or false")
    return ConfigRequest(config_id, observe)


def parse_applied(payload: bytes, settings: GatewaySettings, read: JsonReader) -> Applied:
    body = _object(payload, settings, read, {"configId", "statusCode", "reasonPhrase"})
    config_id, status, phrase = body.get("configId"), body.get("statusCode", 200), body.get("reasonPhrase")
    if not isinstance(config_id, str) or not config_id:
        raise Kp1Error(400, "configId (a string) is required")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise Kp1Error(400, "statusCode must be an integer 100-599")
    if phrase is not None and (not isinstance(phrase, str) or len(phrase) > MAX_REASON_PHRASE):
        raise Kp1Error(400, f"reasonPhrase must be a string of at most {MAX_REASON_PHRASE} characters")
    return Applied(config_id, status, phrase)
