"""Request dependencies: the admin bearer token, and the running gateway."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from ..node.runtime import Gateway

UNAUTHENTICATED = "missing or wrong bearer token"
_bearer = HTTPBearer(auto_error=False, description="the admin token, from `<data-dir>/admin-token`")


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def is_admin_token(request: Request, given: str) -> bool:
    expected: str = request.app.state.admin_token
    return secrets.compare_digest(given.encode(), expected.encode())


async def bearer_token(request: Request) -> str:
    """The bearer token of the request, or "" (a malformed header counts as none)."""
    credentials = await _bearer(request)
    return credentials.credentials if credentials is not None else ""


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    given = credentials.credentials if credentials is not None else ""
    if not is_admin_token(request, given):
        raise HTTPException(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})


if TYPE_CHECKING:
    GatewayDep = Annotated[Gateway, Depends(get_gateway)]
else:  # FastAPI resolves annotations at runtime, where Gateway would be a circular import
    GatewayDep = Annotated[Any, Depends(get_gateway)]
