"""Every error answers `{"error", "message", "field"}` with the status that says what went wrong."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from registry.errors import Conflict, Invalid, LimitReached, NotFound, RegistryError

from ..services.commands.messages import CommandRefused

_STATUS = {
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    Invalid: (422, "invalid"),
    LimitReached: (429, "too_many_requests"),
}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid",
    410: "gone",
    429: "too_many_requests",
    504: "timeout",
}


class BadRequest(HTTPException):
    """A 400 that names the offending field."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(status, message)
        self.field = field


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """`extra` adds fields a client acts on (the id of a command that timed out)."""
    body: dict[str, Any] = {"error": _CODES.get(status, "error"), "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({**body, **extra}, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str | None:
    """The field's path without its location (`body`, `query`...): a body field may itself be `query`."""
    if loc and loc[0] in ("body", "path", "query", "header", "cookie"):
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or None


async def _registry_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegistryError)
    status, _code = _STATUS.get(type(exc), (400, "bad_request"))
    return error_response(status, exc.message, exc.field)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return error_response(400, "malformed JSON body")
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return error_response(400, "a JSON body is required")
    field = _field(tuple(first.get("loc", ())))
    if first.get("type") == "extra_forbidden":
        return error_response(422, f"unknown field {field!r}", field)
    return error_response(422, f"{field or 'body'}: {first.get('msg')}", field)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(
        exc.status_code, str(exc.detail), getattr(exc, "field", None), headers=getattr(exc, "headers", None)
    )


async def _command_refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CommandRefused)
    return error_response(exc.status, exc.message, exc.field)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CommandRefused, _command_refused)
    app.add_exception_handler(RegistryError, _registry_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
