"""The filter language's data: whitelisted columns, the typed AST, and its canonical text.

A :data:`Schema` maps each logical column name a filter may use to a :class:`Column` (its type
and, optionally, the trusted SQL it stands for). A parsed or hand-built filter is a tree of the
frozen node classes below; :func:`describe` writes one back as canonical filter text.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from atlas.errors import InvalidInput

__all__ = [
    "COLUMN_TYPES",
    "COMPARE_OPS",
    "INT64_MAX",
    "INT64_MIN",
    "And",
    "Between",
    "Column",
    "ColumnType",
    "Compare",
    "Contains",
    "Expr",
    "In",
    "IsNull",
    "Not",
    "Or",
    "Schema",
    "Value",
    "describe",
]

ColumnType: TypeAlias = Literal["str", "int", "float", "bool", "date", "list[str]"]
Value: TypeAlias = str | int | float | bool | _dt.date
"""A literal after validation: ``date`` columns hold :class:`datetime.date` values."""

COLUMN_TYPES: frozenset[str] = frozenset({"str", "int", "float", "bool", "date", "list[str]"})
"""Every :data:`ColumnType`, as a set to check a schema against."""
COMPARE_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")
"""The operators of :class:`Compare`."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of integer literals (DuckDB ``BIGINT``)."""


@dataclass(frozen=True)
class Column:
    """One whitelisted catalog column.

    ``name`` is the logical name users write in filters (and the key in the :data:`Schema`).
    ``sql`` optionally maps it to a *trusted, constant* SQL expression, e.g. the logical name
    ``label`` to the stored column ``"label_name"``; it is never built from user input.
    Without ``sql`` the column is referenced as the double-quoted ``name``.
    """

    name: str
    type: ColumnType
    sql: str | None = None


Schema: TypeAlias = Mapping[str, Column]
"""Logical column name → :class:`Column`; the whitelist a filter is checked against."""


@dataclass(frozen=True)
class Compare:
    """``column op value`` with ``op`` one of ``== != < <= > >=``."""

    column: str
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    """``column in [values...]`` (or ``not in`` when ``negated``)."""

    column: str
    values: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    """``column is null`` (or ``is not null`` when ``negated``)."""

    column: str
    negated: bool = False


@dataclass(frozen=True)
class Between:
    """``column between low and high`` (inclusive on both ends, like SQL)."""

    column: str
    low: Value
    high: Value


@dataclass(frozen=True)
class Contains:
    """``column contains value``: substring for ``str``, membership for ``list[str]``."""

    column: str
    value: str


@dataclass(frozen=True)
class And:
    """All of ``items`` hold."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """At least one of ``items`` holds."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    """``item`` does not hold (SQL three-valued logic: ``not null`` is null)."""

    item: Expr


Expr: TypeAlias = Compare | In | IsNull | Between | Contains | And | Or | Not
"""Any filter AST node."""


def _literal_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _dt.date):
        return f'"{value.isoformat()}"'
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def describe(expr: Expr) -> str:
    """The canonical text of ``expr`` (for CLI output and audit logs).

    Lower-case keywords, double-quoted strings, ISO dates, nested ``and``/``or`` always in
    parentheses. For a validated AST, ``parse(describe(e), schema) == e``.
    """
    if isinstance(expr, And | Or):
        word = " and " if isinstance(expr, And) else " or "
        return word.join(_describe_child(item) for item in expr.items)
    if isinstance(expr, Not):
        return f"not {_describe_child(expr.item)}"
    if isinstance(expr, Compare):
        return f"{expr.column} {expr.op} {_literal_text(expr.value)}"
    if isinstance(expr, In):
        values = ", ".join(_literal_text(v) for v in expr.values)
        return f"{expr.column} {'not in' if expr.negated else 'in'} [{values}]"
    if isinstance(expr, IsNull):
        return f"{expr.column} is {'not null' if expr.negated else 'null'}"
    if isinstance(expr, Between):
        return f"{expr.column} between {_literal_text(expr.low)} and {_literal_text(expr.high)}"
    if isinstance(expr, Contains):
        return f"{expr.column} contains {_literal_text(expr.value)}"
    raise InvalidInput(f"not a filter expression: {type(expr).__name__}")


def _describe_child(expr: Expr) -> str:
    text = describe(expr)
    return f"({text})" if isinstance(expr, And | Or) else text
