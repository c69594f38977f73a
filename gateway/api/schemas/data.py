"""A device's last data sample (api/data.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from .base import Body


class LastDataOut(Body):
    endpoint_id: str
    app_version_name: str
    received_at: datetime = Field(description="when the gateway took the message, ISO 8601 UTC (as every REST time)")
    received_at_ms: int = Field(
        description="the same instant in ms since the epoch, as `receivedAt` in the MQTT messages to applications"
    )
    sample: Any
    """The last sample of the device's last data message."""
    messages: int
    """Data messages accepted from the device since this node started (or since its entry was evicted)."""
    samples: int
