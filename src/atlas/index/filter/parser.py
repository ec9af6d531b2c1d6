"""Filter text → typed AST: a hand-written, bounded tokenizer and recursive-descent parser.

The grammar is in :mod:`atlas.index.filter`. There is no ``eval`` and no :mod:`ast`; the
input length, nesting depth, node count and ``in``-list length are limited while parsing
(recursion never goes deeper than :data:`~.validation.MAX_DEPTH` levels), and every problem
is an :class:`~atlas.errors.InvalidInput` naming the character position, with a caret
excerpt and, where one helps, a hint (``use '==' for equality``, ``strings need quotes``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from atlas.errors import InvalidInput
from atlas.index.filter.nodes import (
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
from atlas.index.filter.validation import (
    KEYWORDS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_LENGTH,
    MAX_NODES,
    bad_char,
    check_op,
    check_schema,
    coerce,
    printable,
    unknown_column_message,
)

__all__ = ["parse", "syntax_error"]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def syntax_error(text: str, pos: int, message: str, near: str | None = None) -> InvalidInput:
    """An :class:`InvalidInput` for ``text`` at character offset ``pos``, with a caret excerpt."""
    pos = max(0, min(pos, len(text)))
    if near is None:
        near = text[pos : pos + 12]
    where = (
        f"near {printable(near[:24])!r} at position {pos}"
        if near
        else f"at end of input (position {pos})"
    )
    start = max(0, pos - 30)
    end = min(len(text), pos + 30)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(text) else ""
    excerpt = prefix + printable(text[start:end]) + suffix
    caret = " " * (len(prefix) + pos - start) + "^"
    return InvalidInput(f"invalid filter: {message} {where}\n    {excerpt}\n    {caret}")


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
            raise syntax_error(text, i, f"unknown operator {ch!r}{hint}", ch)
        if ch in "\"'":
            toks.append(_lex_string(text, i))
            i += len(toks[-1].text)
            continue
        if ch.isascii() and (ch.isdigit() or ch in "-."):
            m = _NUMBER_RE.match(text, i)
            if not m:
                raise syntax_error(text, i, "bad number literal", text[i : i + 12])
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_.\"'"):
                bad = re.match(r"[^\s()\[\],]*", text[i:])
                raise syntax_error(
                    text, i, "bad number literal", bad.group(0) if bad else text[i:end]
                )
            literal = m.group(0)
            value: int | float
            try:
                value = float(literal) if any(c in literal for c in ".eE") else int(literal)
            except ValueError:
                raise syntax_error(text, i, "bad number literal", literal) from None
            if isinstance(value, float) and not math.isfinite(value):
                raise syntax_error(text, i, "number out of range", literal)
            if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                raise syntax_error(text, i, "integer out of range (64-bit)", literal)
            toks.append(_Tok("lit", literal, i, value))
            i = end
            continue
        m = _IDENT_SCAN_RE.match(text, i)
        if m:
            word = m.group(0)
            end = m.end()
            if end < n and not text[end].isascii() and text[end].isalnum():
                raise syntax_error(
                    text,
                    end,
                    f"unknown character {text[end]!r} (identifiers are ASCII)",
                    word + text[end],
                )
            lower = word.lower()
            if lower in ("true", "false"):
                toks.append(_Tok("lit", word, i, lower == "true"))
            elif lower in KEYWORDS:
                toks.append(_Tok("kw", lower, i))
            else:
                toks.append(_Tok("ident", word, i))
            i = end
            continue
        raise syntax_error(text, i, f"unknown character {printable(ch)!r}", ch)
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
                shown = "\\" + printable(esc)
                raise syntax_error(
                    text,
                    i,
                    f"invalid escape '{shown}' in string (allowed: \\\" \\' \\\\ \\n \\t)",
                    text[i : i + 2],
                )
            out.append(_ESCAPES[esc])
            i += 2
            continue
        if ch in "\r\n\t":
            raise syntax_error(
                text, i, "raw control character in string (write \\n or \\t)", text[start:i]
            )
        out.append(ch)
        i += 1
    raise syntax_error(text, start, "unterminated string", text[start : start + 24])


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _describe_tok(tok: _Tok) -> str:
    return "the end of the input" if tok.kind == "end" else repr(printable(tok.text[:24]))


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
        return syntax_error(self.text, tok.pos, message, tok.text or None)

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
            raise syntax_error(self.text, 0, "empty filter", "")
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
            raise self.error(tok, unknown_column_message(tok.text, self.schema))
        return column

    def check(self, tok: _Tok, name: str, column: Column, what: str) -> None:
        try:
            check_op(name, column, what)
        except InvalidInput as err:
            raise self.error(tok, err.message) from None

    def literal(self, name: str, column: Column) -> Value:
        tok = self.peek()
        after = repr(self.prev_text())
        if tok.kind == "lit":
            self.advance()
            try:
                return coerce(name, column, tok.value)
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
    check_schema(schema)
    if len(text) > MAX_LENGTH:
        raise InvalidInput(
            f"invalid filter: input too long ({len(text)} characters, at most {MAX_LENGTH})"
        )
    for pos, ch in enumerate(text):
        if ch not in "\t\r\n" and bad_char(ch):
            raise syntax_error(
                text, pos, f"control character U+{ord(ch):04X} not allowed", printable(ch)
            )
    return _Parser(text, _tokenize(text), schema).parse()
