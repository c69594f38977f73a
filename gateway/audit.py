"""One structured (logfmt) line per security-relevant decision, on the `gateway.audit` logger."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection

from .kp1.topic import KP1

log = logging.getLogger("gateway.audit")
_TOKEN_LEVEL = 3  # kp1/<app version>/<extension>/<endpoint token>/...
_NOT_SECRET = ("", "+", "#")
MAX_TOPIC_HINT = 256  # characters of a topic a log line shows: a 65,535-byte topic must not become one


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "._:-/@[]" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def audit_enabled(level: int = logging.INFO) -> bool:
    """For callers whose fields cost something to compute (a topic hint hashes): skip them when off."""
    return log.isEnabledFor(level)


def audit(event: str, level: int = logging.INFO, **fields: object) -> None:
    if not log.isEnabledFor(level):
        return
    parts = [f"event={event}"] + [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
    log.log(level, " ".join(parts))


def secret_hint(secret: str | None) -> str | None:
    """A short digest that lets operators correlate lines without logging the token itself."""
    if not secret:
        return None
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:12]


def topic_hint(topic: str, tokens: Collection[str] = ()) -> str:
    """`topic` as a log line may show it: the token level of a kp1 topic, and any level equal to one
    of `tokens`, become `[sha256:<secret_hint>]`. Wildcards and empty levels are shown as they are."""
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if level in _NOT_SECRET:
            continue
        if level in tokens or (index == _TOKEN_LEVEL and levels[0] == KP1):
            levels[index] = f"[sha256:{secret_hint(level)}]"
    hint = "/".join(levels)
    return hint if len(hint) <= MAX_TOPIC_HINT else f"{hint[:MAX_TOPIC_HINT]}...({len(topic)} chars)"
