"""Who sent a request, from its Authorization header alone (the admin, with its bearer token; someone
with another; no one), and where from (the address a per-address bound counts). The middlewares ask
before any route runs; the routes themselves still require the token (deps.require_admin)."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from starlette.types import Scope

from ..auth.throttle import address_key


class Caller(StrEnum):
    ADMIN = "admin"
    ANONYMOUS = "anonymous"
    WRONG_TOKEN = "anonymous (wrong token)"


def caller_of(scope: Scope, admin_token: bytes) -> Caller:
    """The first Authorization header decides, as it does for the routes. Its length is compared
    first: a megabyte of header is not compared byte by byte (the token's length is no secret)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            given = given.strip()
            if (
                scheme.lower() == b"bearer"
                and len(given) == len(admin_token)
                and secrets.compare_digest(given, admin_token)
            ):
                return Caller.ADMIN
            return Caller.WRONG_TOKEN
    return Caller.ANONYMOUS


def address_of(scope: Scope) -> str:
    """The client's address as the bounds count it (an IPv6 client by its /64)."""
    client = scope.get("client")
    return address_key(str(client[0])) if client else "(unknown)"


def admin_actor(admin_token: str) -> str:
    """The admin token's id: a digest, so the trail names which token without holding it."""
    return "admin:" + hashlib.sha256(admin_token.encode()).hexdigest()[:12]
