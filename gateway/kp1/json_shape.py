"""What a JSON text's raw bytes say about it before it is parsed: how many values it holds, how deep
it nests, whether it could hold a value strict JSON refuses. Each answer costs a few passes of C
(bytes.count, replace, translate, one regex search), never a Python step per byte or per value, so
sizing up a payload is cheap whatever its shape; what is refused here is never parsed.

Every answer is exact for valid JSON (a string's content is not structure: `skeleton` empties them
first); for invalid JSON it is an estimate, and the parser then refuses the text anyway.
"""

from __future__ import annotations

import re

_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_NOT_VALUE_STARTS = bytes(set(range(256)) - set(b",[{"))
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 200
_BIG_EXPONENT = re.compile(rb"[eE][+-]?[0-9]{3}")
"""A number passes a double's range (1.8e308) only with an exponent of three digits or with 200 digits
in a row: fewer, and an exponent of at most 99 keeps it below 1e299."""
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def skeleton(data: bytes) -> bytes:
    """The text with every string emptied (`"..."` -> `""`): what is left is structure, numbers and
    literals. In JSON a backslash only ever opens a two-character escape inside a string, so dropping
    `\\\\` and then `\\"` leaves exactly the quotes that delimit strings."""
    if b'"' not in data:
        return data
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b'""'.join(data.split(b'"')[0::2])


def values(skeleton_text: bytes) -> int:
    """How many values (scalars, arrays and objects; keys not counted) the text holds at most: the
    top one, then one more after each comma and one first in each container."""
    return 1 + len(skeleton_text.translate(None, _NOT_VALUE_STARTS))  # one pass, where three counts take three


def deeper_than(skeleton_text: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep. Each pass removes the innermost
    (empty) pairs, one level; `limit` passes at most. Unbalanced brackets are left to the parser."""
    brackets = skeleton_text.translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets or b"[" * (limit + 1) in brackets:
            break
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False  # unbalanced: not JSON, which the parser says
        brackets = shorter
    return b"[" in brackets


def may_be_unrepresentable(data: bytes, skeleton_text: bytes) -> bool:
    """Whether the text could hold NaN, Infinity, a number beyond a double or a lone UTF-16 surrogate:
    only then must every parsed value be looked at. False positives (a `\\\\ud800` that is text, a
    1e-300) only cost that look."""
    return (
        b"NaN" in skeleton_text
        or b"Infinity" in skeleton_text
        or _BIG_EXPONENT.search(skeleton_text) is not None
        or _LONG_DIGITS in skeleton_text.translate(_DIGITS_AS_ZERO)
        or _ESCAPED_SURROGATE.search(data) is not None
    )
