"""JSON request bodies read by the rules device payloads follow (gateway/kp1/payload.py): no duplicate
keys, NaN, Infinity or lone surrogates, bounded nesting. Used where a body carries free-form JSON that
is stored and handed on (metadata values, command payloads)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..kp1.payload import PayloadError, UnrepresentableValue, parse_json
from .errors import BadRequest

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request) -> Any:
    """Within `json_max_values`, counted before the body is parsed (413)."""
    max_values: int = request.app.state.gateway.settings.json_max_values
    try:
        return parse_json(await request.body(), max_values=max_values)
    except UnrepresentableValue as exc:  # well-formed, but cannot be stored: NaN, Infinity, a lone surrogate
        raise BadRequest(str(exc), exc.field, status=422) from None
    except PayloadError as exc:
        raise BadRequest(str(exc), status=exc.status) from None


async def model_body(request: Request, model: type[M]) -> M:
    """The body as `model`, validated as FastAPI would (422 naming the field)."""
    value = await json_body(request)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
