"""Request dependencies: the admin bearer token, and the running gateway."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from ..runtime import Gateway

_bearer = HTTPBearer(auto_error=False)


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    expected: str = request.app.state.admin_token
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


if TYPE_CHECKING:
    GatewayDep = Annotated[Gateway, Depends(get_gateway)]
else:  # FastAPI resolves annotations at runtime, where Gateway would be a circular import
    GatewayDep = Annotated[Any, Depends(get_gateway)]
