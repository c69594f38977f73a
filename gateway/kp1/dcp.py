"""2/DCP data collection: what a device publishes to `kp1/<app version>/dcx/<token>/json[/<request id>]`.

A message is a UTF-8 JSON object (one sample) or a non-empty array of objects, within the configured
limits; anything else is refused with the 1/KP status that says why (400, 413).
"""

from __future__ import annotations

from typing import Any

from ..node.settings import GatewaySettings
from .payload import JsonReader, PayloadError
from .reply import Kp1Error

EXTENSION = "dcx"
RESOURCE = "/json"


def parse_samples(settings: GatewaySettings, path: str, payload: bytes, read: JsonReader) -> list[dict[str, Any]]:
    if path != RESOURCE:
        raise Kp1Error(404, f"unknown resource {path or '(empty)'!r}; data goes to '{RESOURCE}'")
    if len(payload) > settings.data_max_payload_bytes:
        raise Kp1Error(413, f"payload over {settings.data_max_payload_bytes} bytes")
    try:
        value = read(payload, settings.data_max_depth)
    except PayloadError as exc:
        raise Kp1Error(exc.status, str(exc)) from None
    samples = [value] if isinstance(value, dict) else value
    if not isinstance(samples, list) or not samples or not all(isinstance(s, dict) for s in samples):
        raise Kp1Error(400, "payload must be a JSON object or a non-empty JSON array of objects")
    if len(samples) > settings.data_max_samples:
        raise Kp1Error(413, f"more than {settings.data_max_samples} samples in one message")
    return samples
