"""What every body shares: camelCase JSON, unknown fields refused, and the identifier types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from registry.identifiers import APP_VERSION_PATTERN, AUTH_ID_PATTERN, ID_PATTERN, TOKEN_PATTERN

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


AppVersion = Annotated[str, StringConstraints(pattern=APP_VERSION_PATTERN)]


Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]


AuthId = Annotated[str, StringConstraints(pattern=AUTH_ID_PATTERN)]


AttrKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


AttrValue = Annotated[str, StringConstraints(max_length=1024)]


Attributes = Annotated[dict[AttrKey, AttrValue], Field(max_length=64)]


# Every integer the API stores is bounded well inside SQLite's 64-bit INTEGER: beyond it, 500.
MaxDevices = Annotated[int, Field(ge=0, le=10**9)]


RatePerMinute = Annotated[int, Field(ge=1, le=1_000_000)]


ExtensionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._~-]{1,64}$")]


ForwardExtensions = Annotated[list[ExtensionName], Field(max_length=16)]


class Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ErrorOut(Body):
    error: str
    message: str
    field: str | None = None
