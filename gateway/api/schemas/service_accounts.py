"""Service accounts' bodies (api/service_accounts.py)."""

from __future__ import annotations

from .base import AuthId, Body


class ServiceAccountIn(Body):
    id: AuthId


class ServiceAccountOut(Body):
    id: str
    username: str
    password: str | None
