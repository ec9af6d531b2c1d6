"""Compiling a validated filter: parameterised DuckDB SQL, or a pyarrow expression.

No text of the user's ever becomes SQL: a column is referenced by its double-quoted
whitelisted name or by its trusted :attr:`~atlas.index.filter.nodes.Column.sql` constant, and
every literal becomes a ``?`` parameter. :func:`to_pyarrow` gives the same rows as
:func:`to_sql` under SQL's three-valued logic, for filtering Arrow tables and datasets.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput
from atlas.index.filter.nodes import (
    INT64_MAX,
    INT64_MIN,
    And,
    Between,
    Compare,
    Expr,
    In,
    IsNull,
    Not,
    Or,
    Schema,
    Value,
)
from atlas.index.filter.validation import IDENT_RE, validate

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow.compute as pc

__all__ = ["to_pyarrow", "to_sql"]

_SQL_OPS: dict[str, str] = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _sql_column(name: str, schema: Schema) -> str:
    column = schema[name]
    if column.sql is not None:
        return f"({column.sql})"
    if not IDENT_RE.match(column.name):  # pragma: no cover - guarded by check_schema
        raise InvalidInput(f"schema column {name!r} has an invalid SQL name")
    return f'"{column.name}"'


def to_sql(expr: Expr, schema: Schema) -> tuple[str, list[Any]]:
    """Compile ``expr`` to a DuckDB boolean SQL expression and its parameters.

    The SQL contains only whitelisted column references (double-quoted names or the trusted
    :attr:`Column.sql` constants), keywords, operators, parentheses, commas and ``?``
    placeholders; every value is in the returned parameter list, in order. Output is
    deterministic. Use it as ``con.execute(f"SELECT ... WHERE {sql}", params)``.
    Raises :class:`~atlas.errors.InvalidInput` if ``expr`` does not validate.
    """
    checked = validate(expr, schema)
    params: list[Any] = []
    return _sql(checked, schema, params), params


def _sql(expr: Expr, schema: Schema, params: list[Any]) -> str:
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_sql(item, schema, params) for item in expr.items) + ")"
    if isinstance(expr, Not):
        return f"(NOT {_sql(expr.item, schema, params)})"
    col = _sql_column(expr.column, schema)
    if isinstance(expr, Compare):
        params.append(expr.value)
        return f"{col} {_SQL_OPS[expr.op]} ?"
    if isinstance(expr, In):
        params.extend(expr.values)
        marks = ", ".join("?" for _ in expr.values)
        return f"{col} {'NOT IN' if expr.negated else 'IN'} ({marks})"
    if isinstance(expr, IsNull):
        return f"{col} IS {'NOT NULL' if expr.negated else 'NULL'}"
    if isinstance(expr, Between):
        params.extend((expr.low, expr.high))
        return f"{col} BETWEEN ? AND ?"
    params.append(expr.value)
    if schema[expr.column].type == "list[str]":
        return f"list_contains({col}, ?)"
    return f"contains({col}, ?)"


# --------------------------------------------------------------------------------------------
# pyarrow
# --------------------------------------------------------------------------------------------

_SIMPLE_SQL_RE = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\Z|([A-Za-z_][A-Za-z0-9_]*)\Z')


def _arrow_field_name(name: str, schema: Schema) -> str:
    column = schema[name]
    if column.sql is None:
        return column.name
    m = _SIMPLE_SQL_RE.match(column.sql.strip())
    if not m:
        raise InvalidInput(
            f"column {name!r} maps to the SQL expression {column.sql!r}, which has no pyarrow "
            "equivalent; use to_sql"
        )
    return m.group(1) or m.group(2)


def to_pyarrow(expr: Expr, schema: Schema) -> pc.Expression:
    """Compile ``expr`` to an equivalent :class:`pyarrow.compute.Expression`.

    Uses SQL three-valued logic (a comparison with a null is null, and a null filter result
    drops the row), so filtering a table or dataset gives the same rows as :func:`to_sql` in
    DuckDB. Columns with a :attr:`Column.sql` mapping must map to a plain column name.
    ``contains`` on ``list[str]`` columns has no pyarrow kernel and raises
    :class:`~atlas.errors.InvalidInput`, as does an invalid ``expr``.
    """
    checked = validate(expr, schema)
    return _arrow(checked, schema)


def _arrow_scalar(value: Value, ctype: str) -> Any:
    import pyarrow as pa

    if ctype == "date":
        return pa.scalar(value, pa.date32())
    if ctype == "bool":
        return pa.scalar(value, pa.bool_())
    if ctype in ("str", "list[str]"):
        return pa.scalar(value, pa.string())
    if isinstance(value, float):
        return pa.scalar(value, pa.float64())
    return pa.scalar(value, pa.int64())


def _numeric_value_set(values: tuple[Value, ...], ctype: str) -> Any:
    """The ``is_in`` value set for a numeric column, matching SQL/Python number equality.

    pyarrow hashes ``-0.0`` and ``0.0`` apart, and an int column can only equal integral floats.
    """
    import pyarrow as pa

    numbers: list[float] = []
    ints: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):  # pragma: no cover - validated
            continue
        if isinstance(v, int):
            ints.append(v)
        elif v.is_integer() and INT64_MIN <= v <= INT64_MAX:
            ints.append(int(v))
        numbers.append(float(v))
    if ctype == "int":
        return pa.array(ints, pa.int64())
    if 0.0 in numbers:
        numbers += [0.0, -0.0]
    return pa.array(numbers, pa.float64())


def _arrow(expr: Expr, schema: Schema) -> pc.Expression:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(expr, And | Or):
        parts = [_arrow(item, schema) for item in expr.items]
        result = parts[0]
        for part in parts[1:]:
            result = (result & part) if isinstance(expr, And) else (result | part)
        return result
    if isinstance(expr, Not):
        return ~_arrow(expr.item, schema)
    column = schema[expr.column]
    ctype = column.type
    field = pc.field(_arrow_field_name(expr.column, schema))
    if isinstance(expr, Compare):
        value = _arrow_scalar(expr.value, ctype)
        ops = {
            "==": field.__eq__,
            "!=": field.__ne__,
            "<": field.__lt__,
            "<=": field.__le__,
            ">": field.__gt__,
            ">=": field.__ge__,
        }
        compared: pc.Expression = ops[expr.op](value)
        return compared
    if isinstance(expr, In):
        if ctype == "date":
            value_set = pa.array(expr.values, pa.date32())
        elif ctype == "bool":
            value_set = pa.array(expr.values, pa.bool_())
        elif ctype == "str":
            value_set = pa.array(expr.values, pa.string())
        else:
            value_set = _numeric_value_set(expr.values, ctype)
        # SQL: NULL IN (...) is NULL; pyarrow's is_in would say false.
        member = pc.if_else(field.is_null(), pa.scalar(None, pa.bool_()), field.isin(value_set))
        return ~member if expr.negated else member
    if isinstance(expr, IsNull):
        return field.is_valid() if expr.negated else field.is_null()
    if isinstance(expr, Between):
        low = _arrow_scalar(expr.low, ctype)
        high = _arrow_scalar(expr.high, ctype)
        return (field >= low) & (field <= high)
    if ctype == "list[str]":
        raise InvalidInput(
            f"'contains' on list column {expr.column!r} has no pyarrow equivalent; use to_sql"
        )
    return pc.match_substring(field, pattern=expr.value)
