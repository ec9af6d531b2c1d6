"""The safe filter language of the Atlas catalog, compiled to parameterised DuckDB SQL.

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

Strings are single- or double-quoted, with the escapes ``\\" \\' \\\\ \\n \\t`` only.
Numbers may be negative and use exponents (``-1.5e-3``).

Safety: no text of the user's ever becomes SQL. Column names are looked up in a
:data:`Schema` (a whitelist); the SQL for a column is either its double-quoted name or a
trusted constant (:attr:`Column.sql`); every literal becomes a ``?`` parameter. The parser is
hand-written (no ``eval``, no :mod:`ast`) and bounded: input length, ``in``-list length,
nesting depth and node count are all limited, and every problem is an
:class:`~atlas.errors.InvalidInput` that names the position and shows a caret excerpt.

Public API: :class:`Column`, :data:`Schema`, the AST node classes (:class:`Compare`,
:class:`In`, :class:`IsNull`, :class:`Between`, :class:`Contains`, :class:`And`, :class:`Or`,
:class:`Not`), :func:`parse`, :func:`where_kwargs`, :func:`validate`, :func:`to_sql`,
:func:`to_pyarrow` and :func:`describe`.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from atlas.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow.compute as pc

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

MAX_LENGTH = 4096
"""Longest filter text accepted, in characters."""
MAX_IN_VALUES = 1000
"""Most values in one ``in [...]`` list."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses and ``not`` accepted."""
MAX_NODES = 500
"""Most AST nodes (conditions plus ``and``/``or``/``not``) in one filter."""

ColumnType: TypeAlias = Literal["str", "int", "float", "bool", "date", "list[str]"]
Value: TypeAlias = str | int | float | bool | _dt.date
"""A literal after validation: ``date`` columns hold :class:`datetime.date` values."""

_COLUMN_TYPES: frozenset[str] = frozenset({"str", "int", "float", "bool", "date", "list[str]"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------
# Schema and AST
# --------------------------------------------------------------------------------------------


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

_LEAVES = (Compare, In, IsNull, Between, Contains)
_COMPARE_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")
_SQL_OPS: dict[str, str] = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ORDERED_TYPES = frozenset({"str", "int", "float", "date"})
_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "is", "null", "between", "contains", "true", "false"}
)
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` with every non-printable character replaced by ``?`` (length preserved)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _syntax_error(text: str, pos: int, message: str, near: str | None = None) -> InvalidInput:
    """An :class:`InvalidInput` for ``text`` at character offset ``pos``, with a caret excerpt."""
    pos = max(0, min(pos, len(text)))
    if near is None:
        near = text[pos : pos + 12]
    where = (
        f"near {_printable(near[:24])!r} at position {pos}"
        if near
        else f"at end of input (position {pos})"
    )
    start = max(0, pos - 30)
    end = min(len(text), pos + 30)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(text) else ""
    excerpt = prefix + _printable(text[start:end]) + suffix
    caret = " " * (len(prefix) + pos - start) + "^"
    return InvalidInput(f"invalid filter: {message} {where}\n    {excerpt}\n    {caret}")


def _unknown_column_message(name: str, schema: Schema) -> str:
    known = sorted(schema)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    for candidate in known:
        if candidate.lower() == name.lower() and candidate not in close:
            close.insert(0, candidate)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown column {_printable(name[:64])!r}{hint} (known columns: {', '.join(known)})"


def _check_schema(schema: Schema) -> None:
    for key, column in schema.items():
        if not isinstance(column, Column):
            raise InvalidInput(f"schema entry {key!r} is not a Column")
        if not _IDENT_RE.match(key) or key.lower() in _KEYWORDS:
            raise InvalidInput(f"schema column name {key!r} is not a valid filter identifier")
        if column.type not in _COLUMN_TYPES:
            raise InvalidInput(f"schema column {key!r} has unknown type {column.type!r}")
        if column.sql is None and not _IDENT_RE.match(column.name):
            raise InvalidInput(f"schema column {key!r} has an invalid SQL name {column.name!r}")


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_DATE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z|(\d{4})(\d{2})(\d{2})\Z", re.ASCII)


def _bad_char(ch: str) -> bool:
    """Control characters, surrogates, bidi overrides and line separators are never accepted."""
    if ch in _BIDI_CONTROLS:
        return True
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def _check_string_value(value: str) -> str | None:
    """Why ``value`` cannot be a string literal, or ``None`` when it can."""
    for ch in value:
        if ch not in "\n\t" and _bad_char(ch):
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


def _coerce(name: str, column: Column, value: object) -> Value:
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
                    f"column {name!r} is date: {_printable(value[:32])!r} is not a real date "
                    '(use "YYYY-MM-DD" or "YYYYMMDD")'
                )
            return parsed
        raise mismatch
    if isinstance(value, bool):
        if ctype == "bool":
            return value
        raise mismatch
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
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


def _check_op(name: str, column: Column, what: str) -> None:
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
# Tokenizer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident kw lit op ( ) [ ] , end
    text: str
    pos: int
    value: Any = None


_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_IDENT_SCAN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
            continue
        if ch in "()[],":
            toks.append(_Tok(ch, ch, i))
            i += 1
            continue
        if ch in "=!<>":
            two = text[i : i + 2]
            if two in ("==", "!=", "<=", ">="):
                toks.append(_Tok("op", two, i))
                i += 2
                continue
            if ch in "<>":
                toks.append(_Tok("op", ch, i))
                i += 1
                continue
            hint = " (use '==' for equality)" if ch == "=" else " (use '!=' or 'not')"
            raise _syntax_error(text, i, f"unknown operator {ch!r}{hint}", ch)
        if ch in "\"'":
            toks.append(_lex_string(text, i))
            i += len(toks[-1].text)
            continue
        if ch.isascii() and (ch.isdigit() or ch in "-."):
            m = _NUMBER_RE.match(text, i)
            if not m:
                raise _syntax_error(text, i, "bad number literal", text[i : i + 12])
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_.\"'"):
                bad = re.match(r"[^\s()\[\],]*", text[i:])
                raise _syntax_error(
                    text, i, "bad number literal", bad.group(0) if bad else text[i:end]
                )
            literal = m.group(0)
            value: int | float
            try:
                value = float(literal) if any(c in literal for c in ".eE") else int(literal)
            except ValueError:
                raise _syntax_error(text, i, "bad number literal", literal) from None
            if isinstance(value, float) and not math.isfinite(value):
                raise _syntax_error(text, i, "number out of range", literal)
            if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
                raise _syntax_error(text, i, "integer out of range (64-bit)", literal)
            toks.append(_Tok("lit", literal, i, value))
            i = end
            continue
        m = _IDENT_SCAN_RE.match(text, i)
        if m:
            word = m.group(0)
            end = m.end()
            if end < n and not text[end].isascii() and text[end].isalnum():
                raise _syntax_error(
                    text,
                    end,
                    f"unknown character {text[end]!r} (identifiers are ASCII)",
                    word + text[end],
                )
            lower = word.lower()
            if lower in ("true", "false"):
                toks.append(_Tok("lit", word, i, lower == "true"))
            elif lower in _KEYWORDS:
                toks.append(_Tok("kw", lower, i))
            else:
                toks.append(_Tok("ident", word, i))
            i = end
            continue
        raise _syntax_error(text, i, f"unknown character {_printable(ch)!r}", ch)
    toks.append(_Tok("end", "", n))
    return toks


def _lex_string(text: str, start: int) -> _Tok:
    quote = text[start]
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == quote:
            return _Tok("lit", text[start : i + 1], start, "".join(out))
        if ch == "\\":
            if i + 1 >= n:
                break
            esc = text[i + 1]
            if esc not in _ESCAPES:
                shown = "\\" + _printable(esc)
                raise _syntax_error(
                    text,
                    i,
                    f"invalid escape '{shown}' in string (allowed: \\\" \\' \\\\ \\n \\t)",
                    text[i : i + 2],
                )
            out.append(_ESCAPES[esc])
            i += 2
            continue
        if ch in "\r\n\t":
            raise _syntax_error(
                text, i, "raw control character in string (write \\n or \\t)", text[start:i]
            )
        out.append(ch)
        i += 1
    raise _syntax_error(text, start, "unterminated string", text[start : start + 24])


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _describe_tok(tok: _Tok) -> str:
    return "the end of the input" if tok.kind == "end" else repr(_printable(tok.text[:24]))


class _Parser:
    """Recursive-descent parser over the token list; bounded depth and node count."""

    def __init__(self, text: str, toks: list[_Tok], schema: Schema) -> None:
        self.text = text
        self.toks = toks
        self.schema = schema
        self.i = 0
        self.depth = 0
        self.nodes = 0

    # -- helpers -----------------------------------------------------------------------------
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def is_kw(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "kw" and tok.text == word

    def error(self, tok: _Tok, message: str) -> InvalidInput:
        return _syntax_error(self.text, tok.pos, message, tok.text or None)

    def prev_text(self) -> str:
        return self.toks[self.i - 1].text if self.i > 0 else ""

    def node(self, expr: Expr, tok: _Tok) -> Expr:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(tok, f"filter too large (more than {MAX_NODES} conditions/operators)")
        return expr

    def enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(tok, f"filter nested too deeply (more than {MAX_DEPTH} levels)")

    # -- grammar -----------------------------------------------------------------------------
    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise _syntax_error(self.text, 0, "empty filter", "")
        expr = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            if tok.kind == ")":
                raise self.error(tok, "unbalanced ')' without a matching '('")
            raise self.error(
                tok, f"expected 'and', 'or' or the end of the input, got {_describe_tok(tok)}"
            )
        return expr

    def or_expr(self) -> Expr:
        first = self.peek()
        items = [self.and_expr()]
        while self.is_kw("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else self.node(Or(tuple(items)), first)

    def and_expr(self) -> Expr:
        first = self.peek()
        items = [self.not_expr()]
        while self.is_kw("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else self.node(And(tuple(items)), first)

    def not_expr(self) -> Expr:
        if self.is_kw("not"):
            tok = self.advance()
            self.enter(tok)
            item = self.not_expr()
            self.depth -= 1
            return self.node(Not(item), tok)
        return self.primary()

    def primary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "(":
            self.advance()
            self.enter(tok)
            expr = self.or_expr()
            close = self.peek()
            if close.kind != ")":
                if close.kind == "end":
                    raise self.error(
                        tok, f"unbalanced '(': missing ')' (input ended at position {close.pos})"
                    )
                raise self.error(close, f"expected ')' to close '(' at position {tok.pos}")
            self.advance()
            self.depth -= 1
            return expr
        if tok.kind == "ident":
            return self.comparison()
        after = f" after {self.prev_text()!r}" if self.i > 0 else ""
        if tok.kind == "end":
            raise self.error(tok, f"expected a condition{after}")
        if tok.kind == "lit":
            raise self.error(tok, f"expected a column name{after}, got the literal {tok.text!r}")
        raise self.error(tok, f"expected a column name or '('{after}, got {_describe_tok(tok)}")

    def column(self, tok: _Tok) -> Column:
        column = self.schema.get(tok.text)
        if column is None:
            raise self.error(tok, _unknown_column_message(tok.text, self.schema))
        return column

    def check(self, tok: _Tok, name: str, column: Column, what: str) -> None:
        try:
            _check_op(name, column, what)
        except InvalidInput as err:
            raise self.error(tok, err.message) from None

    def literal(self, name: str, column: Column) -> Value:
        tok = self.peek()
        after = repr(self.prev_text())
        if tok.kind == "lit":
            self.advance()
            try:
                return _coerce(name, column, tok.value)
            except InvalidInput as err:
                raise self.error(tok, err.message) from None
        if tok.kind == "end":
            raise self.error(tok, f"expected a value after {after}")
        if tok.kind == "kw" and tok.text == "null":
            raise self.error(tok, f"null is not a value; write '{name} is null' instead")
        if tok.kind == "ident":
            raise self.error(
                tok,
                f"expected a value (string, number, true or false) after {after}; "
                "strings need quotes",
            )
        raise self.error(
            tok,
            f"expected a value (string, number, true or false) after {after}, "
            f"got {_describe_tok(tok)}",
        )

    def expect_kw(self, word: str, context: str) -> None:
        tok = self.peek()
        if not self.is_kw(word):
            raise self.error(tok, f"expected '{word}' {context}, got {_describe_tok(tok)}")
        self.advance()

    def comparison(self) -> Expr:
        ident = self.advance()
        name = ident.text
        column = self.column(ident)
        tok = self.peek()
        if tok.kind == "op":
            self.advance()
            self.check(tok, name, column, tok.text)
            value = self.literal(name, column)
            return self.node(Compare(name, tok.text, value), ident)
        if tok.kind == "kw":
            word = tok.text
            if word == "in" or word == "not":
                self.advance()
                negated = word == "not"
                if negated:
                    self.expect_kw("in", f"after '{name} not'")
                self.check(tok, name, column, "in")
                values = self.in_list(name, column)
                return self.node(In(name, values, negated), ident)
            if word == "is":
                self.advance()
                negated = self.is_kw("not")
                if negated:
                    self.advance()
                self.expect_kw("null", f"after '{name} is{' not' if negated else ''}'")
                return self.node(IsNull(name, negated), ident)
            if word == "between":
                self.advance()
                self.check(tok, name, column, "between")
                low = self.literal(name, column)
                self.expect_kw("and", f"in '{name} between ... and ...'")
                high = self.literal(name, column)
                return self.node(Between(name, low, high), ident)
            if word == "contains":
                self.advance()
                self.check(tok, name, column, "contains")
                vtok = self.peek()
                if vtok.kind == "lit" and not isinstance(vtok.value, str):
                    raise self.error(vtok, f"'contains' needs a quoted string for column {name!r}")
                value = self.literal(name, column)
                assert isinstance(value, str)
                return self.node(Contains(name, value), ident)
        raise self.error(
            tok,
            f"expected an operator after column {name!r} (== != < <= > >= in, not in, "
            f"is null, between, contains), got {_describe_tok(tok)}",
        )

    def in_list(self, name: str, column: Column) -> tuple[Value, ...]:
        tok = self.peek()
        if tok.kind != "[":
            raise self.error(tok, f"expected '[' after 'in', got {_describe_tok(tok)}")
        self.advance()
        values: list[Value] = []
        while True:
            if self.peek().kind == "]" and not values:
                raise self.error(self.peek(), "empty 'in' list")
            values.append(self.literal(name, column))
            if len(values) > MAX_IN_VALUES:
                raise self.error(
                    self.toks[self.i - 1], f"'in' list longer than {MAX_IN_VALUES} values"
                )
            sep = self.peek()
            if sep.kind == ",":
                self.advance()
                continue
            if sep.kind == "]":
                self.advance()
                return tuple(values)
            if sep.kind == "end":
                raise self.error(tok, "unbalanced '[': missing ']'")
            raise self.error(sep, f"expected ',' or ']' in the 'in' list, got {_describe_tok(sep)}")


def parse(text: str, schema: Schema) -> Expr:
    """Parse and validate filter ``text`` against the whitelist ``schema``.

    Returns the typed AST. Raises :class:`~atlas.errors.InvalidInput` for anything else:
    syntax errors, unknown columns (with close matches and the known columns), type
    mismatches, control characters, and inputs over the limits (:data:`MAX_LENGTH` characters,
    :data:`MAX_IN_VALUES` values per ``in`` list, :data:`MAX_DEPTH` nesting levels,
    :data:`MAX_NODES` nodes). Messages give the character position and a caret excerpt.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"filter must be a string, got {type(text).__name__}")
    _check_schema(schema)
    if len(text) > MAX_LENGTH:
        raise InvalidInput(
            f"invalid filter: input too long ({len(text)} characters, at most {MAX_LENGTH})"
        )
    for pos, ch in enumerate(text):
        if ch not in "\t\r\n" and _bad_char(ch):
            raise _syntax_error(
                text, pos, f"control character U+{ord(ch):04X} not allowed", _printable(ch)
            )
    return _Parser(text, _tokenize(text), schema).parse()


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
    _check_schema(schema)
    if not kwargs:
        raise InvalidInput("where_kwargs needs at least one condition")
    items: list[Expr] = []
    for name, value in kwargs.items():
        column = schema.get(name)
        if column is None:
            raise InvalidInput(f"invalid filter: {_unknown_column_message(name, schema)}")
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
            _check_op(name, column, "<=")
            return Compare(name, "<=", _coerce(name, column, hi))
        if hi is None:
            _check_op(name, column, ">=")
            return Compare(name, ">=", _coerce(name, column, lo))
        _check_op(name, column, "between")
        return Between(name, _coerce(name, column, lo), _coerce(name, column, hi))
    if isinstance(value, list | tuple | set | frozenset):
        _check_op(name, column, "in")
        values = [_coerce(name, column, v) for v in value]
        if not values:
            raise InvalidInput(f"empty list of values for column {name!r}")
        if isinstance(value, set | frozenset):
            values.sort(key=lambda v: (type(v).__name__, v))
        return In(name, tuple(values))
    if column.type == "list[str]":
        _check_op(name, column, "contains")
        coerced = _coerce(name, column, value)
        assert isinstance(coerced, str)
        return Contains(name, coerced)
    _check_op(name, column, "==")
    return Compare(name, "==", _coerce(name, column, value))


# --------------------------------------------------------------------------------------------
# Validation of (possibly hand-built) ASTs
# --------------------------------------------------------------------------------------------


def _column_of(name: object, schema: Schema) -> Column:
    if not isinstance(name, str) or name not in schema:
        raise InvalidInput(f"invalid filter: {_unknown_column_message(str(name), schema)}")
    return schema[name]


def validate(expr: Expr, schema: Schema) -> Expr:
    """Check an AST (for example a hand-built one) against ``schema`` and the limits.

    Returns an equivalent AST with values normalised as :func:`parse` produces them (dates as
    :class:`datetime.date`, numbers for ``float`` columns as ``float``). A validated AST
    always round-trips: ``parse(describe(e), schema) == validate(e, schema)``.
    Raises :class:`~atlas.errors.InvalidInput`.
    """
    _check_schema(schema)
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
        if expr.op not in _SQL_OPS:
            raise InvalidInput(f"invalid filter: unknown comparison operator {expr.op!r}")
        _check_op(expr.column, column, expr.op)
        return Compare(expr.column, expr.op, _coerce(expr.column, column, expr.value))
    if isinstance(expr, In):
        column = _column_of(expr.column, schema)
        _check_op(expr.column, column, "in")
        if not isinstance(expr.values, tuple) or not expr.values:
            raise InvalidInput(f"invalid filter: 'in' for {expr.column!r} needs a non-empty tuple")
        if len(expr.values) > MAX_IN_VALUES:
            raise InvalidInput(f"invalid filter: 'in' list longer than {MAX_IN_VALUES} values")
        values = tuple(_coerce(expr.column, column, v) for v in expr.values)
        return In(expr.column, values, bool(expr.negated))
    if isinstance(expr, IsNull):
        _column_of(expr.column, schema)
        return IsNull(expr.column, bool(expr.negated))
    if isinstance(expr, Between):
        column = _column_of(expr.column, schema)
        _check_op(expr.column, column, "between")
        low = _coerce(expr.column, column, expr.low)
        high = _coerce(expr.column, column, expr.high)
        return Between(expr.column, low, high)
    if isinstance(expr, Contains):
        column = _column_of(expr.column, schema)
        _check_op(expr.column, column, "contains")
        if not isinstance(expr.value, str):
            raise InvalidInput(f"invalid filter: 'contains' for {expr.column!r} needs a string")
        value = _coerce(expr.column, column, expr.value)
        assert isinstance(value, str)
        return Contains(expr.column, value)
    raise InvalidInput(f"invalid filter: not a filter expression: {type(expr).__name__}")


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------


def _sql_column(name: str, schema: Schema) -> str:
    column = schema[name]
    if column.sql is not None:
        return f"({column.sql})"
    if not _IDENT_RE.match(column.name):  # pragma: no cover - guarded by _check_schema
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
        elif v.is_integer() and _INT64_MIN <= v <= _INT64_MAX:
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


# --------------------------------------------------------------------------------------------
# Canonical text
# --------------------------------------------------------------------------------------------


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
