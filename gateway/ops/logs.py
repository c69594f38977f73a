"""Log set-up for `mqtt-gateway serve`: `log_format = "text"` (one line per record) or `"json"` (one
JSON object per line, for a log shipper). Audit lines (gateway/ops/audit.py) carry their fields on the
record, so in JSON they are keys, not a logfmt string to parse again."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from ..node.settings import GatewaySettings

FIELDS_ATTR = "audit_fields"
"""The record attribute audit() puts its event's fields in."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            line |= {k: v for k, v in fields.items() if k not in line}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: GatewaySettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # amqtt and websockets log every connection at INFO; our own lines say what matters. aiosqlite
    # logs every statement with its parameters at DEBUG: tokens, whole uploads.
    quiet = max(logging.WARNING, logging.getLevelName(settings.log_level))
    for noisy in ("amqtt", "transitions", "websockets", "aiosqlite"):
        logging.getLogger(noisy).setLevel(quiet)
