"""Strict JSON for device payloads (10/EPMP) and operator metadata: UTF-8, no duplicate keys, bounded
nesting, and only values that can be stored and served back as JSON. That rules out NaN and
Infinity (Python's json reads and writes them; JSON has neither), numbers beyond a double (they
would come back as Infinity) and lone UTF-16 surrogates from a `\\ud800` escape (no UTF-8 encoder,
SQLite's included, accepts one).

What validating costs is bounded by the payload's raw size, whatever its shape (issue 17 point 3):
the raw text is sized up first, at C speed (json_shape.py: how many values, how deep), and what is
over the bounds is never parsed; the parser runs in C with one Python call per object (duplicate
keys); the walk over every value runs only when the raw text could hold a value refused above.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from . import json_shape

MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")  # only a `\\uXXXX` escape can put one in a str: UTF-8 cannot


class PayloadError(ValueError):
    status = 400
    """The 1/KP (and HTTP) status a payload refused this way gets."""


class TooManyValues(PayloadError):
    """More values than allowed, counted on the raw text: refused before it is parsed."""

    status = 413


class UnrepresentableValue(PayloadError):
    """Well-formed JSON text holding a value that cannot be stored. `field` is the dotted path to it
    (object keys and array indexes; None for the top level), surrogates shown as `\\udXXX` escapes."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(f"{field}: {message}" if field is not None else message)
        self.field = field


class JsonReader(Protocol):
    """parse_json as a device's payloads get it: within their sender's validation budget (budget.py)."""

    def __call__(self, data: bytes, max_depth: int = MAX_DEPTH) -> Any: ...


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # in C; the keys are compared one by one only when some repeat
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise PayloadError(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _check(value: Any, path: tuple[str, ...] = ()) -> None:
    """Raises UnrepresentableValue at the first value that cannot be stored. Recursion is bounded:
    the text was checked against MAX_DEPTH before it was parsed (size_up)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnrepresentableValue("not a finite number (NaN, Infinity, or beyond a double's range)", _path(path))
    if isinstance(value, str) and _has_surrogate(value):
        raise UnrepresentableValue("a string holds a lone UTF-16 surrogate", _path(path))
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                raise UnrepresentableValue("a key holds a lone UTF-16 surrogate", _path((*path, key)))
            _check(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, (*path, str(index)))


def _path(path: tuple[str, ...]) -> str | None:
    return ".".join(_printable(p) for p in path) if path else None


@dataclass(frozen=True, slots=True)
class SizedUp:
    """A payload whose raw text passed the checks that need no parsing."""

    text: str
    suspect: bool
    """It could hold a value that cannot be stored: every value is looked at once it is parsed."""


def size_up(data: bytes, max_depth: int = MAX_DEPTH, max_values: int | None = None) -> SizedUp:
    """The checks on the raw text. Raises PayloadError (not UTF-8, nested deeper than `max_depth`, at
    most MAX_DEPTH) or TooManyValues (more than `max_values`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8") from None
    skeleton = json_shape.skeleton(data)
    if max_values is not None and json_shape.values(skeleton) > max_values:
        raise TooManyValues(f"more than {max_values} JSON values")
    max_depth = min(max_depth, MAX_DEPTH)
    if json_shape.deeper_than(skeleton, max_depth):
        raise PayloadError(f"JSON nested deeper than {max_depth}")
    return SizedUp(text, json_shape.may_be_unrepresentable(data, skeleton))


def parse_sized(sized: SizedUp) -> Any:
    """Raises PayloadError for malformed JSON, UnrepresentableValue (a PayloadError) for well-formed
    JSON whose values cannot be stored."""
    try:
        value = json.loads(sized.text, object_pairs_hook=_no_duplicates)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    if sized.suspect:
        _check(value)
    return value


def parse_json(data: bytes, max_depth: int = MAX_DEPTH, max_values: int | None = None) -> Any:
    """size_up, then parse_sized: what either raises."""
    return parse_sized(size_up(data, max_depth, max_values))
