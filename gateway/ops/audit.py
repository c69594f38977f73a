"""One structured (logfmt) line per security-relevant decision, on the `gateway.audit` logger."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Collection

from ..kp1.topic import KP1
from .logs import FIELDS_ATTR

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
    present = {k: v for k, v in fields.items() if v is not None}
    parts = [f"event={event}"] + [f"{k}={_quote(v)}" for k, v in present.items()]
    log.log(level, " ".join(parts), extra={FIELDS_ATTR: {"event": event, **present}})


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


class BurstLog:
    """One audit line for the first event of a burst, and one summary (`event=<event>_burst count=N`)
    `window` seconds later if more came: a flood of auto-provisionings or dropped requests logs a
    few lines, never thousands and never none. At most `max_keys` bursts are tracked at once."""

    def __init__(self, event: str, *, window: float = 60.0, level: int = logging.INFO, max_keys: int = 10_000) -> None:
        self.event = event
        self._window = window
        self._level = level
        self._max_keys = max_keys
        self._suppressed: dict[str, int] = {}
        """key -> events since its burst's first line (0: none yet); the key's summary is scheduled."""

    def note(self, key: str, **fields: object) -> None:
        count = self._suppressed.get(key)
        if count is not None:
            self._suppressed[key] = count + 1
            return
        if len(self._suppressed) >= self._max_keys:
            key = "(others)"  # a flood over many keys still ends in one summary line
            if key in self._suppressed:
                self._suppressed[key] += 1
                return
        audit(self.event, self._level, **fields)
        self._suppressed[key] = 0
        asyncio.get_running_loop().call_later(self._window, self._summarize, key)

    def _summarize(self, key: str) -> None:
        count = self._suppressed.pop(key, 0)
        if count:
            audit(f"{self.event}_burst", self._level, key=key, count=count, seconds=self._window)
