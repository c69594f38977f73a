"""gateway/kp1/payload.py, the strict JSON both devices (10/EPMP) and operators (metadata API) send:
what is malformed (PayloadError) and what is well-formed but cannot be stored and served back as
JSON (UnrepresentableValue: NaN, Infinity, numbers beyond a double, lone UTF-16 surrogates)."""

from __future__ import annotations

import pytest

from gateway.kp1.payload import MAX_DEPTH, PayloadError, TooManyValues, UnrepresentableValue, parse_json


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("NaN", None),
        ("Infinity", None),
        ("-Infinity", None),
        ('{"a": NaN}', "a"),
        ('{"a": Infinity}', "a"),
        ('{"a": -Infinity}', "a"),
        ('{"a": [1, {"b": NaN}]}', "a.1.b"),
        ('{"a": 1e400}', "a"),  # valid JSON text, but no double holds it: it would come back as Infinity
        ('{"a": -1e400}', "a"),
        ("[1, 2, 1E999]", "2"),
        ("[1" + "0" * 250 + "e99]", "0"),  # a two-digit exponent, but 251 digits before it
        ("[1" + "0" * 400 + ".5]", "0"),
    ],
)
def test_non_finite_numbers_are_unrepresentable(text: str, field: str | None) -> None:
    with pytest.raises(UnrepresentableValue) as caught:
        parse_json(text.encode())
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"\\ud800"', None),
        ('{"a": "\\ud800"}', "a"),
        ('{"a": "x\\udfffy"}', "a"),
        ('{"a": "\\udc00\\ud800"}', "a"),  # a pair in the wrong order is two lone surrogates
        ('{"a": "\\ud83d"}', "a"),  # the first half of an emoji, cut off
        ('{"a": ["ok", {"b": ["\\ud800"]}]}', "a.1.b.0"),
        ('{"\\ud800": 1}', "\\ud800"),
        ('{"a": {"k\\udfff": 1}}', "a.k\\udfff"),
    ],
)
def test_lone_surrogates_are_unrepresentable(text: str, field: str | None) -> None:
    with pytest.raises(UnrepresentableValue) as caught:
        parse_json(text.encode())
    assert caught.value.field == field
    # the message and field are sent back (API body, 10/EPMP reasonPhrase): they must be valid UTF-8
    str(caught.value).encode("utf-8")
    (caught.value.field or "").encode("utf-8")


def test_what_strict_json_still_accepts() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a proper surrogate pair
    assert parse_json('{"a": "\U0001f600"}'.encode()) == {"a": "\U0001f600"}
    assert parse_json(b'{"a": 1.7976931348623157e308, "b": -0.0, "c": 5e-324}') == {
        "a": 1.7976931348623157e308,
        "b": -0.0,
        "c": 5e-324,
    }
    big = "9" * 100  # integers are exact in JSON text; only floats overflow
    assert parse_json(f'{{"a": {big}}}'.encode()) == {"a": int(big)}
    assert parse_json(b'{"a": "NaN", "b": "Infinity", "c": null}') == {"a": "NaN", "b": "Infinity", "c": None}
    assert parse_json(b'{"a": "\\u0000"}') == {"a": "\x00"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"a": nan}',
        b'{"a": infinity}',
        b'{"a": +1}',
        b'{"a": 1, "a": 2}',
        b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes: not UTF-8 at all
        b'{"a": "\xff"}',
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    ],
)
def test_malformed_json_stays_a_plain_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_json(data)
    assert not isinstance(caught.value, UnrepresentableValue)


def test_values_are_counted_on_the_raw_text_before_parsing() -> None:
    """Issue 17 point 3: a 64 KiB `[{},{},...]` must not cost a parse to refuse."""
    many = b"[" + b",".join([b"{}"] * 100) + b"]"  # 201 values: the array, 100 objects... counted once each
    with pytest.raises(TooManyValues) as caught:
        parse_json(many, max_values=200)
    assert caught.value.status == 413
    assert parse_json(many, max_values=201) == [{}] * 100
    assert PayloadError("x").status == 400


def test_what_lies_inside_strings_is_text_not_structure() -> None:
    text = b'{"a": "' + b"[{,:" * 1000 + rb'", "b": "\\\"[[[\\", "c": "\\"}'
    assert parse_json(text, max_depth=1, max_values=4) == {"a": "[{,:" * 1000, "b": '\\"[[[\\', "c": "\\"}
    assert parse_json(rb'["NaN", "Infinity", "1e999", "\\ud800"]') == ["NaN", "Infinity", "1e999", "\\ud800"]


@pytest.mark.parametrize(
    ("data", "depth"),
    [
        (b"[" * 16 + b"]" * 16, 16),
        (b"[[]," * 8 + b"[]" + b"]" * 8, 9),  # no long run of '[': found level by level
        (b'[{"a": [{"b": []}]}, [], {}]', 5),
    ],
)
def test_nesting_is_measured_on_the_raw_text(data: bytes, depth: int) -> None:
    assert parse_json(data, max_depth=depth) is not None
    with pytest.raises(PayloadError, match="deeper"):
        parse_json(data, max_depth=depth - 1)
