"""Strict JSON for device payloads (10/EPMP) and operator metadata: UTF-8, no duplicate keys, bounded
nesting, and only values that can be stored and served back as JSON. That rules out NaN and
Infinity (Python's json reads and writes them; JSON has neither), numbers beyond a double (they
would come back as Infinity) and lone UTF-16 surrogates from a `\\ud800` escape (no UTF-8 encoder,
SQLite's included, accepts one)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")  # only a `\\uXXXX` escape can put one in a str: UTF-8 cannot


class PayloadError(ValueError):
    pass


class UnrepresentableValue(PayloadError):
    """Well-formed JSON text holding a value that cannot be stored. `field` is the dotted path to it
    (object keys and array indexes; None for the top level), surrogates shown as `\\udXXX` escapes."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(f"{field}: {message}" if field is not None else message)
        self.field = field


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _depth(data: bytes) -> int:
    """Nesting depth, counted over the raw text before parsing (outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _check(value: Any, path: tuple[str, ...] = ()) -> None:
    """Raises UnrepresentableValue at the first value that cannot be stored. Recursion is bounded:
    the text was checked against MAX_DEPTH before it was parsed."""
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


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Raises PayloadError for malformed JSON (or nested deeper than `max_depth`, at most MAX_DEPTH),
    UnrepresentableValue (a PayloadError) for well-formed JSON whose values cannot be stored."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8") from None
    max_depth = min(max_depth, MAX_DEPTH)
    if _depth(data) > max_depth:
        raise PayloadError(f"JSON nested deeper than {max_depth}")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"malformed JSON: {exc}") from None
    _check(value)
    return value
