"""The endpoint-filter query language (issue 10 point 6), compiled to one parameterized SQL boolean
expression over a device row `d`.

A query is a JSON object. Each key is a field and its value a literal (equality) or an object of
operators; several keys must all hold. `$and` / `$or` take a non-empty array of queries.

    {"metadata.city": "Kyiv", "connected": true, "appVersion": {"$in": ["v1", "v2"]}}

Fields: `group`, `state`, `appVersion` (strings; appVersion may be null), `enabled`, `connected`
(booleans), `attr.<key>` (device attributes) and `metadata.<key>` (10/EPMP metadata, any JSON type).
Operators: `$eq $ne $in $nin $exists $gt $gte $lt $lte`. A literal matches a value of its own JSON
type only (`3` never matches `"3"`); `$gt`-style operators compare numbers with numbers and strings
with strings; `$ne` and `$nin` also match a device that lacks the key (as in MongoDB).

Values are always bound, never spliced; keys are checked against their patterns before they become
JSON paths (also bound). Every leaf is COALESCEd to 0 or 1, so NOT never meets SQL's NULL.
A refusal names the offending place as a JSON Pointer into the request (`/query/$or/1/state`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .device_search import ATTR_KEY, CONNECTED_SQL, METADATA_KEY
from .errors import Invalid
from .models import DeviceState

MAX_QUERY_BYTES = 8192
MAX_CONDITIONS = 64
"""Field conditions in one query (each operator of a field counts once)."""
MAX_VALUES = 256
"""Literal values in one query, `$in` lists included: bounds the bound parameters of one filter."""
MAX_DEPTH = 8
MAX_STRING = 1024
_MAX_INT = 2**63 - 1

Scalar = str | int | float | bool | None
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS)
FIELDS = ("group", "state", "enabled", "connected", "appVersion", "attr.<key>", "metadata.<key>")


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    text: str
    """The query as canonical JSON (what is stored and shown)."""
    sql: str
    """A boolean expression over the device row `d`: 1 when the device matches, else 0."""
    args: tuple[object, ...]
    cost: int
    """Its leaf comparisons (at least 1; each value of an `$in` is one): what evaluating it for one
    device costs, roughly. The evaluator sizes its transactions by it."""


def compile_query(query: object) -> CompiledQuery:
    """Raises Invalid (field = a JSON Pointer) for anything the language does not say."""
    if not isinstance(query, dict):
        raise Invalid("a query is a JSON object", field="/query")
    text = json.dumps(query, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_QUERY_BYTES:
        raise Invalid(f"a query is at most {MAX_QUERY_BYTES} bytes", field="/query")
    compiler = _Compiler()
    sql = compiler.query(query, ("query",), 1)
    return CompiledQuery(text, sql, tuple(compiler.args), max(1, compiler.cost))


def _pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _fail(path: tuple[str | int, ...], message: str) -> Invalid:
    return Invalid(f"{_pointer(path)}: {message}", field=_pointer(path))


class _Compiler:
    def __init__(self) -> None:
        self.args: list[object] = []
        self.conditions = 0
        self.values = 0
        self.cost = 0

    def query(self, query: object, path: tuple[str | int, ...], depth: int) -> str:
        if not isinstance(query, dict):
            raise _fail(path, "a query is a JSON object")
        if depth > MAX_DEPTH:
            raise _fail(path, f"queries nest at most {MAX_DEPTH} deep")
        parts = []
        for key, value in query.items():
            here = (*path, key)
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise _fail(here, f"{key} takes a non-empty array of queries")
                subs = [self.query(v, (*here, i), depth + 1) for i, v in enumerate(value)]
                parts.append("(" + (" AND " if key == "$and" else " OR ").join(subs) + ")")
            elif key.startswith("$"):
                raise _fail(here, f"unknown operator {key!r} here: only $and and $or combine queries")
            else:
                parts.append(self.field(key, value, here))
        return "(" + " AND ".join(parts) + ")" if parts else "1"

    def field(self, name: str, spec: object, path: tuple[str | int, ...]) -> str:
        target = _target(name, path)
        if not isinstance(spec, dict):
            return self.condition(target, "$eq", spec, path)
        if not spec:
            raise _fail(path, "an operator object needs at least one operator")
        return "(" + " AND ".join(self.condition(target, op, v, (*path, op)) for op, v in spec.items()) + ")"

    def condition(self, target: _Target, op: str, value: object, path: tuple[str | int, ...]) -> str:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _fail(path, f"a query has at most {MAX_CONDITIONS} conditions")
        self.cost += len(value) if op in ("$in", "$nin") and isinstance(value, list) else 1
        if op == "$exists":
            if not isinstance(value, bool):
                raise _fail(path, "$exists takes true or false")
            return target.exists(self.args) if value else f"NOT {target.exists(self.args)}"
        if op in ("$eq", "$ne"):
            sql = target.equals(self.literal(target, value, path), self.args)
            return sql if op == "$eq" else f"NOT {sql}"
        if op in ("$in", "$nin"):
            if not isinstance(value, list) or not value:
                raise _fail(path, f"{op} takes a non-empty array of values")
            values = [self.literal(target, v, (*path, i)) for i, v in enumerate(value)]
            sql = "(" + " OR ".join(target.equals(v, self.args) for v in values) + ")"
            return sql if op == "$in" else f"NOT {sql}"
        if op in _COMPARISONS:
            literal = self.literal(target, value, path)
            if literal is None or isinstance(literal, bool):
                raise _fail(path, f"{op} compares numbers or strings")
            return target.compare(_COMPARISONS[op], literal, self.args, path)
        raise _fail(path, f"unknown operator {op!r}; known: {', '.join(OPERATORS)}")

    def literal(self, target: _Target, value: object, path: tuple[str | int, ...]) -> Scalar:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _fail(path, f"a query has at most {MAX_VALUES} values")
        if isinstance(value, dict | list):
            raise _fail(path, "a value is a string, number, boolean or null (use $in for several)")
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise _fail(path, f"a string value is at most {MAX_STRING} characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(path, "a string value must be valid Unicode (no lone surrogates)") from None
            if "\x00" in value:  # SQLite's JSON functions end a string at U+0000
                raise _fail(path, "a string value cannot hold U+0000")
        if isinstance(value, int) and not isinstance(value, bool) and not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise _fail(path, "an integer value must fit in 64 bits")
        if isinstance(value, float) and value != value:
            raise _fail(path, "NaN is not a value")
        assert value is None or isinstance(value, str | int | float | bool)
        target.check(value, path)
        return value


class _Target(ABC):
    """How one field is read from a device row."""

    @abstractmethod
    def check(self, value: Scalar, path: tuple[str | int, ...]) -> None:
        """Refuses values the field can never hold (a bad state, a number for a group)."""

    @abstractmethod
    def exists(self, args: list[object]) -> str: ...

    @abstractmethod
    def equals(self, value: Scalar, args: list[object]) -> str: ...

    @abstractmethod
    def compare(self, op: str, value: Scalar, args: list[object], path: tuple[str | int, ...]) -> str: ...


@dataclass(frozen=True, slots=True)
class _Column(_Target):
    """A text column of `devices`: group, state, appVersion (the only one that may be null)."""

    column: str
    nullable: bool = False
    allowed: tuple[str, ...] = ()

    def check(self, value: Scalar, path: tuple[str | int, ...]) -> None:
        if value is None and self.nullable:
            return
        if not isinstance(value, str):
            raise _fail(path, "this field holds a string" + (" or null" if self.nullable else ""))
        if self.allowed and value not in self.allowed:
            raise _fail(path, f"{value!r} is not one of {', '.join(self.allowed)}")

    def exists(self, args: list[object]) -> str:
        return f"({self.column} IS NOT NULL)"

    def equals(self, value: Scalar, args: list[object]) -> str:
        if value is None:
            return f"({self.column} IS NULL)"
        args.append(value)
        return f"COALESCE({self.column} = ?, 0)"

    def compare(self, op: str, value: Scalar, args: list[object], path: tuple[str | int, ...]) -> str:
        args.append(value)
        return f"COALESCE({self.column} {op} ?, 0)"


@dataclass(frozen=True, slots=True)
class _Flag(_Target):
    """enabled (a column) and connected (an open session exists)."""

    sql: str

    def check(self, value: Scalar, path: tuple[str | int, ...]) -> None:
        if not isinstance(value, bool):
            raise _fail(path, "this field holds true or false")

    def exists(self, args: list[object]) -> str:
        return "1"

    def equals(self, value: Scalar, args: list[object]) -> str:
        return self.sql if value else f"NOT {self.sql}"

    def compare(self, op: str, value: Scalar, args: list[object], path: tuple[str | int, ...]) -> str:
        raise _fail(path, "true or false cannot be ordered")


def _json_match(
    json_sql: str, json_args: list[object], raw_sql: str, op: str, value: Scalar, args: list[object]
) -> str:
    """A JSON value (`json_sql` is a json_type/json_extract argument list; `raw_sql` its JSON text)
    against a literal of the same JSON type. json_extract ends a string at U+0000, so a stored string
    holding one (`\u0000` in its JSON text) never matches a string literal (which cannot hold one)."""
    args += json_args
    if value is None:
        return f"COALESCE(json_type({json_sql}) = 'null', 0)"
    if isinstance(value, bool):
        return f"COALESCE(json_type({json_sql}) = '{'true' if value else 'false'}', 0)"
    if isinstance(value, str):
        args += [*json_args, value, *json_args]
        return (
            f"COALESCE(json_type({json_sql}) = 'text' AND json_extract({json_sql}) {op} ?"
            f" AND instr({raw_sql}, '\\u0000') = 0, 0)"
        )
    args += [*json_args, value]
    return f"COALESCE(json_type({json_sql}) IN ('integer', 'real') AND json_extract({json_sql}) {op} ?, 0)"


@dataclass(frozen=True, slots=True)
class _Attribute(_Target):
    key: str

    def check(self, value: Scalar, path: tuple[str | int, ...]) -> None:
        """Any JSON scalar: what a device stores is its own choice."""

    def exists(self, args: list[object]) -> str:
        args.append(self._path)
        return "(json_type(d.attributes, ?) IS NOT NULL)"

    def equals(self, value: Scalar, args: list[object]) -> str:
        return _json_match("d.attributes, ?", [self._path], "d.attributes -> ?", "=", value, args)

    def compare(self, op: str, value: Scalar, args: list[object], path: tuple[str | int, ...]) -> str:
        return _json_match("d.attributes, ?", [self._path], "d.attributes -> ?", op, value, args)

    @property
    def _path(self) -> str:
        return f'$."{self.key}"'


_METADATA_ROW = "EXISTS (SELECT 1 FROM metadata m WHERE m.tenant_id = d.tenant_id AND m.device_id = d.id AND m.key = ?"


@dataclass(frozen=True, slots=True)
class _Metadata(_Target):
    key: str

    def check(self, value: Scalar, path: tuple[str | int, ...]) -> None:
        """Any JSON scalar: what a device stores is its own choice."""

    def exists(self, args: list[object]) -> str:
        args.append(self.key)
        return f"{_METADATA_ROW})"

    def equals(self, value: Scalar, args: list[object]) -> str:
        return self.compare("=", value, args, ())

    def compare(self, op: str, value: Scalar, args: list[object], path: tuple[str | int, ...]) -> str:
        args.append(self.key)
        match = _json_match("m.value, '$'", [], "m.value", op, value, args)
        return f"{_METADATA_ROW} AND {match})"


_FIXED: dict[str, _Target] = {
    "group": _Column("d.grp"),
    "state": _Column("d.state", allowed=tuple(s.value for s in DeviceState if s != DeviceState.DELETED)),
    "appVersion": _Column("d.app_version", nullable=True),
    "enabled": _Flag("(d.enabled = 1)"),
    "connected": _Flag(CONNECTED_SQL),
}
_PREFIXED: dict[str, tuple[Any, Callable[[str], _Target]]] = {
    "attr.": (ATTR_KEY, _Attribute),
    "metadata.": (METADATA_KEY, _Metadata),
}


def _target(name: str, path: tuple[str | int, ...]) -> _Target:
    if name in _FIXED:
        return _FIXED[name]
    for prefix, (pattern, make) in _PREFIXED.items():
        if name.startswith(prefix):
            key = name[len(prefix) :]
            if not pattern.fullmatch(key):
                raise _fail(path, f"invalid key {key!r} for {prefix}<key>")
            return make(key)
    raise _fail(path, f"unknown field {name!r}; fields: {', '.join(FIELDS)}")
