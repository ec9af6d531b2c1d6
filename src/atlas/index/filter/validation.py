"""Whether a filter is allowed: the whitelist, the limits and the column types.

Every filter, parsed from text (:mod:`.parser`), built from keyword arguments
(:func:`where_kwargs`) or built by hand, passes through the checks here before it is compiled:
each column must be in the :data:`~atlas.index.filter.nodes.Schema`, each value must fit its
column's type (dates are parsed, control characters refused), each operation must be defined
for that type, and the tree must stay within :data:`MAX_DEPTH` levels and :data:`MAX_NODES`
nodes (and each ``in`` list within :data:`MAX_IN_VALUES` values).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
import unicodedata
from typing import Any

from atlas.errors import InvalidInput
from atlas.index.filter.nodes import (
    COLUMN_TYPES,
    COMPARE_OPS,
    INT64_MAX,
    INT64_MIN,
    And,
    Between,
    Column,
    Compare,
    Contains,
    Expr,
    In,
    IsNull,
    Not,
    Or,
    Schema,
    Value,
)

__all__ = [
    "IDENT_RE",
    "KEYWORDS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_LENGTH",
    "MAX_NODES",
    "bad_char",
    "check_op",
    "check_schema",
    "coerce",
    "printable",
    "unknown_column_message",
    "validate",
    "where_kwargs",
]

MAX_LENGTH = 4096
"""Longest filter text accepted, in characters."""
MAX_IN_VALUES = 1000
"""Most values in one ``in [...]`` list."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses and ``not`` accepted."""
MAX_NODES = 500
"""Most AST nodes (conditions plus ``and``/``or``/``not``) in one filter."""

_ORDERED_TYPES = frozenset({"str", "int", "float", "date"})
KEYWORDS = frozenset(
    {"and", "or", "not", "in", "is", "null", "between", "contains", "true", "false"}
)
"""The reserved words of the language (never column names)."""
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
"""A whole identifier: a column name in a filter, or a plain SQL column name."""


# --------------------------------------------------------------------------------------------
# Schema and messages
# --------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with every non-printable character replaced by ``?`` (length preserved)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def unknown_column_message(name: str, schema: Schema) -> str:
    """Why ``name`` is refused: the close matches in ``schema`` (if any) and every known column."""
    known = sorted(schema)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    for candidate in known:
        if candidate.lower() == name.lower() and candidate not in close:
            close.insert(0, candidate)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown column {printable(name[:64])!r}{hint} (known columns: {', '.join(known)})"


def check_schema(schema: Schema) -> None:
    """Raise :class:`~atlas.errors.InvalidInput` unless every entry of ``schema`` is usable.

    Each key must be a :class:`~atlas.index.filter.nodes.Column` under a non-keyword
    identifier, of a known type, whose SQL is a trusted constant or a plain identifier.
    """
    for key, column in schema.items():
        if not isinstance(column, Column):
            raise InvalidInput(f"schema entry {key!r} is not a Column")
        if not IDENT_RE.match(key) or key.lower() in KEYWORDS:
            raise InvalidInput(f"schema column name {key!r} is not a valid filter identifier")
        if column.type not in COLUMN_TYPES:
            raise InvalidInput(f"schema column {key!r} has unknown type {column.type!r}")
        if column.sql is None and not IDENT_RE.match(column.name):
            raise InvalidInput(f"schema column {key!r} has an invalid SQL name {column.name!r}")


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z|(\d{4})(\d{2})(\d{2})\Z", re.ASCII)


def bad_char(ch: str) -> bool:
    """Control characters, surrogates, bidi overrides and line separators are never accepted."""
    if ch in _BIDI_CONTROLS:
        return True
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def _check_string_value(value: str) -> str | None:
    """Why ``value`` cannot be a string literal, or ``None`` when it can."""
    for ch in value:
        if ch not in "\n\t" and bad_char(ch):
            return f"control character U+{ord(ch):04X} in a string value"
    return None


def _parse_date(value: str) -> _dt.date | None:
    m = _DATE_RE.match(value)
    if not m:
        return None
    y, mo, d = (int(g) for g in (m.groups()[:3] if m.group(1) else m.groups()[3:]))
    try:
        return _dt.date(y, mo, d)
    except ValueError:
        return None


_EXPECTED = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "true or false",
    "date": 'a date string such as "2020-01-31" or "20200131"',
    "list[str]": "a string",
}


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _dt.date):
        return "a date"
    return f"a {type(value).__name__}"


def coerce(name: str, column: Column, value: object) -> Value:
    """``value`` checked against ``column``'s type (dates parsed, ints widened for floats).

    Raises a plain :class:`InvalidInput`; the parser re-raises it with a position.
    """
    ctype = column.type
    mismatch = InvalidInput(
        f"type mismatch: column {name!r} is {ctype}, expected {_EXPECTED[ctype]}, "
        f"got {_kind(value)}"
    )
    if isinstance(value, str):
        problem = _check_string_value(value)
        if problem:
            raise InvalidInput(problem)
        if ctype in ("str", "list[str]"):
            return value
        if ctype == "date":
            parsed = _parse_date(value)
            if parsed is None:
                raise InvalidInput(
                    f"column {name!r} is date: {printable(value[:32])!r} is not a real date "
                    '(use "YYYY-MM-DD" or "YYYYMMDD")'
                )
            return parsed
        raise mismatch
    if isinstance(value, bool):
        if ctype == "bool":
            return value
        raise mismatch
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInput(f"integer out of range for column {name!r} (64-bit)")
        if ctype == "int":
            return value
        if ctype == "float":
            return float(value)
        raise mismatch
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"number for column {name!r} must be finite")
        if ctype in ("int", "float"):
            return value
        raise mismatch
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        if ctype == "date":
            return value
        raise mismatch
    raise mismatch


def check_op(name: str, column: Column, what: str) -> None:
    """Raise when operation ``what`` is not defined for ``column``'s type."""
    ctype = column.type
    if ctype == "list[str]" and what not in ("contains", "is null"):
        raise InvalidInput(
            f"type mismatch: column {name!r} is list[str]; only 'contains' and 'is null' apply"
        )
    if what == "contains" and ctype not in ("str", "list[str]"):
        raise InvalidInput(
            f"type mismatch: 'contains' needs a str or list[str] column; column {name!r} is {ctype}"
        )
    if what in ("<", "<=", ">", ">=", "between") and ctype not in _ORDERED_TYPES:
        raise InvalidInput(
            f"type mismatch: {what!r} is not defined for column {name!r} of type {ctype} "
            "(use == or !=)"
        )


# --------------------------------------------------------------------------------------------
# Python keyword API
# --------------------------------------------------------------------------------------------


def where_kwargs(schema: Schema, **kwargs: Any) -> Expr:
    """Build a filter from keyword arguments, all of which must hold (``and``).

    * ``modality="CT"`` → ``modality == "CT"`` (on a ``list[str]`` column: ``contains``);
    * a list, tuple, set or frozenset → ``in`` (sets are sorted for deterministic output);
    * ``None`` → ``is null``;
    * ``slice(lo, hi)`` → ``between lo and hi`` (inclusive); ``slice(lo, None)`` → ``>= lo``,
      ``slice(None, hi)`` → ``<= hi``.

    Validated exactly like :func:`parse`; raises :class:`~atlas.errors.InvalidInput`.
    """
    check_schema(schema)
    if not kwargs:
        raise InvalidInput("where_kwargs needs at least one condition")
    items: list[Expr] = []
    for name, value in kwargs.items():
        column = schema.get(name)
        if column is None:
            raise InvalidInput(f"invalid filter: {unknown_column_message(name, schema)}")
        items.append(_kwarg_condition(name, column, value))
    expr: Expr = items[0] if len(items) == 1 else And(tuple(items))
    validate(expr, schema)
    return expr


def _kwarg_condition(name: str, column: Column, value: Any) -> Expr:
    if value is None:
        return IsNull(name)
    if isinstance(value, slice):
        if value.step is not None:
            raise InvalidInput(f"slice for column {name!r} must not have a step")
        lo, hi = value.start, value.stop
        if lo is None and hi is None:
            raise InvalidInput(f"slice for column {name!r} needs a lower or an upper bound")
        if lo is None:
            check_op(name, column, "<=")
            return Compare(name, "<=", coerce(name, column, hi))
        if hi is None:
            check_op(name, column, ">=")
            return Compare(name, ">=", coerce(name, column, lo))
        check_op(name, column, "between")
        return Between(name, coerce(name, column, lo), coerce(name, column, hi))
    if isinstance(value, list | tuple | set | frozenset):
        check_op(name, column, "in")
        values = [coerce(name, column, v) for v in value]
        if not values:
            raise InvalidInput(f"empty list of values for column {name!r}")
        if isinstance(value, set | frozenset):
            values.sort(key=lambda v: (type(v).__name__, v))
        return In(name, tuple(values))
    if column.type == "list[str]":
        check_op(name, column, "contains")
        coerced = coerce(name, column, value)
        assert isinstance(coerced, str)
        return Contains(name, coerced)
    check_op(name, column, "==")
    return Compare(name, "==", coerce(name, column, value))


# --------------------------------------------------------------------------------------------
# Validation of (possibly hand-built) ASTs
# --------------------------------------------------------------------------------------------


def _column_of(name: object, schema: Schema) -> Column:
    if not isinstance(name, str) or name not in schema:
        raise InvalidInput(f"invalid filter: {unknown_column_message(str(name), schema)}")
    return schema[name]


def validate(expr: Expr, schema: Schema) -> Expr:
    """Check an AST (for example a hand-built one) against ``schema`` and the limits.

    Returns an equivalent AST with values normalised as :func:`parse` produces them (dates as
    :class:`datetime.date`, numbers for ``float`` columns as ``float``). A validated AST
    always round-trips: ``parse(describe(e), schema) == validate(e, schema)``.
    Raises :class:`~atlas.errors.InvalidInput`.
    """
    check_schema(schema)
    counter = [0]
    return _validate(expr, schema, 0, counter)


def _validate(expr: object, schema: Schema, depth: int, counter: list[int]) -> Expr:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise InvalidInput(f"invalid filter: too large (more than {MAX_NODES} nodes)")
    if depth > MAX_DEPTH:
        raise InvalidInput(f"invalid filter: nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(expr, And | Or):
        if not isinstance(expr.items, tuple) or len(expr.items) < 2:
            raise InvalidInput(
                f"invalid filter: {type(expr).__name__} needs a tuple of at least two items"
            )
        items = tuple(
            _validate(item, schema, depth + isinstance(item, And | Or), counter)
            for item in expr.items
        )
        return type(expr)(items)
    if isinstance(expr, Not):
        inner = 2 if isinstance(expr.item, And | Or) else 1
        return Not(_validate(expr.item, schema, depth + inner, counter))
    if isinstance(expr, Compare):
        column = _column_of(expr.column, schema)
        if expr.op not in COMPARE_OPS:
            raise InvalidInput(f"invalid filter: unknown comparison operator {expr.op!r}")
        check_op(expr.column, column, expr.op)
        return Compare(expr.column, expr.op, coerce(expr.column, column, expr.value))
    if isinstance(expr, In):
        column = _column_of(expr.column, schema)
        check_op(expr.column, column, "in")
        if not isinstance(expr.values, tuple) or not expr.values:
            raise InvalidInput(f"invalid filter: 'in' for {expr.column!r} needs a non-empty tuple")
        if len(expr.values) > MAX_IN_VALUES:
            raise InvalidInput(f"invalid filter: 'in' list longer than {MAX_IN_VALUES} values")
        values = tuple(coerce(expr.column, column, v) for v in expr.values)
        return In(expr.column, values, bool(expr.negated))
    if isinstance(expr, IsNull):
        _column_of(expr.column, schema)
        return IsNull(expr.column, bool(expr.negated))
    if isinstance(expr, Between):
        column = _column_of(expr.column, schema)
        check_op(expr.column, column, "between")
        low = coerce(expr.column, column, expr.low)
        high = coerce(expr.column, column, expr.high)
        return Between(expr.column, low, high)
    if isinstance(expr, Contains):
        column = _column_of(expr.column, schema)
        check_op(expr.column, column, "contains")
        if not isinstance(expr.value, str):
            raise InvalidInput(f"invalid filter: 'contains' for {expr.column!r} needs a string")
        value = coerce(expr.column, column, expr.value)
        assert isinstance(value, str)
        return Contains(expr.column, value)
    raise InvalidInput(f"invalid filter: not a filter expression: {type(expr).__name__}")
