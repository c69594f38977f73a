"""`kp1/<app version>/<extension>/<endpoint token>/<resource path>[/<request id>]`, parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REQUEST_ID = 2**31 - 1
_REQUEST_ID = re.compile(r"[1-9][0-9]{0,9}")  # positive, no sign, no leading zero


@dataclass(frozen=True, slots=True)
class Kp1Topic:
    topic: str
    app_version: str
    extension: str
    token: str
    path: str
    """The resource path with a leading '/': '/update/keys'. Empty when the topic ends at the token."""
    request_id: int | None


def parse(topic: str) -> Kp1Topic | None:
    """None when this is not a kp1 topic at all. MQTT is slash-sensitive: nothing is normalized."""
    levels = topic.split("/")
    if len(levels) < 4 or levels[0] != "kp1":
        return None
    rest = levels[4:]
    request_id = None
    if rest and _REQUEST_ID.fullmatch(rest[-1]) and int(rest[-1]) <= MAX_REQUEST_ID:
        request_id = int(rest[-1])
        rest = rest[:-1]
    path = "/" + "/".join(rest) if rest else ""
    return Kp1Topic(topic, levels[1], levels[2], levels[3], path, request_id)
