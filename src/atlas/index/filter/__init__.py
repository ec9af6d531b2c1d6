r"""The safe filter language of the Atlas catalog, compiled to parameterised DuckDB SQL.

A filter is a small boolean expression over *whitelisted* catalog columns::

    modality == "CT" and label == "liver tumour" and site in ["A", "B"]
    not (age < 18 or age is null) and study_date between "2019-01-01" and "20201231"
    tags contains "arterial" and score >= -1.5e-3

Grammar (keywords are case-insensitive, identifiers are ``[A-Za-z_][A-Za-z0-9_]*``)::

    expr       := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | primary
    primary    := "(" expr ")" | comparison
    comparison := IDENT op literal
                | IDENT ["not"] "in" "[" literal ("," literal)* "]"
                | IDENT "is" ["not"] "null"
                | IDENT "between" literal "and" literal
                | IDENT "contains" STRING
    op         := "==" | "!=" | "<" | "<=" | ">" | ">="
    literal    := STRING | INTEGER | FLOAT | "true" | "false"

Strings are single- or double-quoted, with the escapes ``\" \' \\ \n \t`` only.
Numbers may be negative and use exponents (``-1.5e-3``).

Safety: no text of the user's ever becomes SQL. Column names are looked up in a
:data:`Schema` (a whitelist); the SQL for a column is either its double-quoted name or a
trusted constant (:attr:`Column.sql`); every literal becomes a ``?`` parameter. The parser is
hand-written (no ``eval``, no :mod:`ast`) and bounded: input length, ``in``-list length,
nesting depth and node count are all limited, and every problem is an
:class:`~atlas.errors.InvalidInput` that names the position and shows a caret excerpt.

One module per concept:

* :mod:`.nodes`: :class:`Column`, :data:`Schema`, the AST node classes and :func:`describe`
  (the canonical text of a filter);
* :mod:`.parser`: :func:`parse` (text → AST; tokenizer, recursive descent, syntax errors);
* :mod:`.validation`: the whitelist, the limits (:data:`MAX_LENGTH`, :data:`MAX_DEPTH`,
  :data:`MAX_NODES`, :data:`MAX_IN_VALUES`), the column types, :func:`validate` and
  :func:`where_kwargs` (filters from Python keyword arguments);
* :mod:`.sql`: :func:`to_sql` (parameterised DuckDB SQL) and :func:`to_pyarrow`.

Why the parser is hand-written rather than generated from a grammar: decision record 0034.
"""

from atlas.index.filter.nodes import (
    And,
    Between,
    Column,
    ColumnType,
    Compare,
    Contains,
    Expr,
    In,
    IsNull,
    Not,
    Or,
    Schema,
    Value,
    describe,
)
from atlas.index.filter.parser import parse
from atlas.index.filter.sql import to_pyarrow, to_sql
from atlas.index.filter.validation import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_LENGTH,
    MAX_NODES,
    validate,
    where_kwargs,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_LENGTH",
    "MAX_NODES",
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
    "parse",
    "to_pyarrow",
    "to_sql",
    "validate",
    "where_kwargs",
]
