"""1/KP responses: to `<request topic>/status` on success, `/error` with `{"statusCode","reasonPhrase"}`
otherwise, and only when the request carried a request id (a request without one is fire-and-forget)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from registry.errors import NotFound

from .topic import Kp1Topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    topic: str
    payload: bytes
    status: int = 200
    """The 1/KP status code it carries (what `/metrics` counts)."""


class Kp1Error(Exception):
    """A request refused with a 1/KP status code (400 malformed, 404 unknown, 413 too large, 429 ...)."""

    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(phrase)
        self.status = status
        self.phrase = phrase


def status_reply(request: Kp1Topic, payload: bytes = b"") -> Reply | None:
    return Reply(request.topic + "/status", payload) if request.request_id is not None else None


def error_reply(request: Kp1Topic, status: int, phrase: str) -> Reply | None:
    if request.request_id is None:
        return None
    body = json.dumps({"statusCode": status, "reasonPhrase": phrase}, separators=(",", ":")).encode()
    return Reply(request.topic + "/error", body, status)


async def answered(request: Kp1Topic, work: Awaitable[Reply | None], protocol: str) -> Reply | None:
    """The reply of a request's handler, or the error reply for what it raised (a 500 never says why)."""
    try:
        return await work
    except Kp1Error as exc:
        return error_reply(request, exc.status, exc.phrase)
    except NotFound:
        return error_reply(request, 404, "unknown endpoint")
    except Exception:
        log.exception("%s request %s failed", protocol, request.path)
        return error_reply(request, 500, "internal error")
