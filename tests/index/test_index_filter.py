"""The catalog filter language: parsing, validation, SQL/pyarrow compilation and safety."""

from __future__ import annotations

import datetime as dt
import operator
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas.errors import InvalidInput
from atlas.index.filter import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_LENGTH,
    MAX_NODES,
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
    describe,
    parse,
    to_pyarrow,
    to_sql,
    validate,
    where_kwargs,
)

duckdb = pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")

SCHEMA: dict[str, Column] = {
    "id": Column("id", "int"),
    "n": Column("n", "int"),
    "modality": Column("modality", "str"),
    "label": Column("label", "str", sql='"label_name"'),
    "site": Column("site", "str"),
    "age": Column("age", "int"),
    "score": Column("score", "float"),
    "contrast": Column("contrast", "bool"),
    "study_date": Column("study_date", "date"),
    "tags": Column("tags", "list[str]"),
}
PHYSICAL = {"label": "label_name"}  # logical name -> stored column

LABELS = [
    "liver tumour",
    "liver",
    "lésion hépatique",
    "腫瘍",
    "O'Brien cyst",
    'say "hi"',
    "back\\slash",
    "line\nbreak",
    "'; DROP TABLE images; --",
    "",
    None,
]
TAGS = ["arterial", "venous", "late", "contrast", "ü-tag", "a'b", "x;y"]


def _rows() -> list[dict[str, Any]]:
    rng = random.Random(1234)
    rows = []
    for i in range(200):
        tags: list[str | None] | None
        roll = rng.random()
        if roll < 0.1:
            tags = None
        elif roll < 0.15:
            tags = [rng.choice(TAGS), None]
        else:
            tags = rng.sample(TAGS, rng.randint(0, 3))
        rows.append(
            {
                "id": i,
                "n": i % 7,
                "modality": rng.choice(["CT", "MR", "PT", "US", "ct", "CT ", None]),
                "label_name": rng.choice(LABELS),
                "site": rng.choice(["A", "B", "C", "D", "Zürich", None]),
                "age": rng.choice([None, *range(-5, 95, 3)]),
                "score": rng.choice(
                    [None, 0.0, -0.0, 1e-3, -1.5, 2.5, 100.0, -1e-3, round(rng.uniform(-50, 50), 3)]
                ),
                "contrast": rng.choice([True, False, None]),
                "study_date": rng.choice(
                    [
                        None,
                        dt.date(2020, 1, 31),
                        dt.date(2020, 2, 29),
                        dt.date(2019, 12, 31),
                        dt.date(2018, 1, 1) + dt.timedelta(days=rng.randint(0, 2000)),
                    ]
                ),
                "tags": tags,
            }
        )
    return rows


ROWS = _rows()


def _arrow_table() -> Any:
    return pa.table(
        {
            "id": pa.array([r["id"] for r in ROWS], pa.int64()),
            "n": pa.array([r["n"] for r in ROWS], pa.int64()),
            "modality": pa.array([r["modality"] for r in ROWS], pa.string()),
            "label_name": pa.array([r["label_name"] for r in ROWS], pa.string()),
            "site": pa.array([r["site"] for r in ROWS], pa.string()),
            "age": pa.array([r["age"] for r in ROWS], pa.int64()),
            "score": pa.array([r["score"] for r in ROWS], pa.float64()),
            "contrast": pa.array([r["contrast"] for r in ROWS], pa.bool_()),
            "study_date": pa.array([r["study_date"] for r in ROWS], pa.date32()),
            "tags": pa.array([r["tags"] for r in ROWS], pa.list_(pa.string())),
        }
    )


TABLE = _arrow_table()


@pytest.fixture(scope="module")
def con() -> Iterator[Any]:
    connection = duckdb.connect(":memory:")
    connection.register("images_arrow", TABLE)
    connection.execute("CREATE TABLE images AS SELECT * FROM images_arrow")
    connection.unregister("images_arrow")
    yield connection
    connection.close()


# ---------------------------------------------------------------------------------------------
# Reference evaluation in plain Python (SQL three-valued logic: None is "unknown")
# ---------------------------------------------------------------------------------------------

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def ref(expr: Expr, row: dict[str, Any]) -> bool | None:
    if isinstance(expr, And):
        results = [ref(item, row) for item in expr.items]
        if False in results:
            return False
        return None if None in results else True
    if isinstance(expr, Or):
        results = [ref(item, row) for item in expr.items]
        if True in results:
            return True
        return None if None in results else False
    if isinstance(expr, Not):
        inner = ref(expr.item, row)
        return None if inner is None else not inner
    value = row[PHYSICAL.get(expr.column, expr.column)]
    if isinstance(expr, IsNull):
        return (value is not None) if expr.negated else (value is None)
    if value is None:
        return None
    if isinstance(expr, Compare):
        return OPS[expr.op](value, expr.value)
    if isinstance(expr, In):
        found = value in expr.values
        return not found if expr.negated else found
    if isinstance(expr, Between):
        return expr.low <= value <= expr.high
    assert isinstance(expr, Contains)
    return expr.value in value


def ref_ids(expr: Expr) -> list[int]:
    return [row["id"] for row in ROWS if ref(expr, row) is True]


def duck_ids(con: Any, expr: Expr) -> list[int]:
    sql, params = to_sql(expr, SCHEMA)
    return [
        r[0]
        for r in con.execute(f"SELECT id FROM images WHERE {sql} ORDER BY id", params).fetchall()
    ]


def arrow_ids(expr: Expr) -> list[int]:
    return sorted(TABLE.filter(to_pyarrow(expr, SCHEMA)).column("id").to_pylist())


def has_list_contains(expr: Expr) -> bool:
    if isinstance(expr, And | Or):
        return any(has_list_contains(item) for item in expr.items)
    if isinstance(expr, Not):
        return has_list_contains(expr.item)
    return isinstance(expr, Contains) and SCHEMA[expr.column].type == "list[str]"


SQL_TOKEN = re.compile(r'\s+|"[A-Za-z_][A-Za-z0-9_]*"|[A-Za-z_]+|\?|<>|<=|>=|[=<>(),]')
SQL_WORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "BETWEEN", "contains", "list_contains"}
SQL_IDENTS = {f'"{c.name}"' for c in SCHEMA.values()} | {'"label_name"'}


def assert_whitelisted_sql(sql: str, params: list[Any]) -> None:
    """The SQL consists only of whitelisted identifiers, keywords, operators and ``?``."""
    pos = 0
    while pos < len(sql):
        m = SQL_TOKEN.match(sql, pos)
        assert m, f"unexpected SQL text at {pos}: {sql[pos : pos + 20]!r}"
        tok = m.group(0)
        if tok.startswith('"'):
            assert tok in SQL_IDENTS, tok
        elif tok[0].isalpha() or tok[0] == "_":
            assert tok in SQL_WORDS, tok
        pos = m.end()
    assert sql.count("?") == len(params)


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------

EXAMPLES: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
    (
        'modality == "CT" and label == "liver tumour" and site in ["A", "B"]',
        lambda r: (
            r["modality"] == "CT" and r["label_name"] == "liver tumour" and r["site"] in ("A", "B")
        ),
    ),
    (
        'not (modality == "CT" or age < 18) and site != "C"',
        lambda r: (
            r["modality"] is not None
            and r["age"] is not None
            and r["site"] is not None
            and not (r["modality"] == "CT" or r["age"] < 18)
            and r["site"] != "C"
        ),
    ),
    ("age between 10 and 40", lambda r: r["age"] is not None and 10 <= r["age"] <= 40),
    ("age is null", lambda r: r["age"] is None),
    ("age is not null and score is null", lambda r: r["age"] is not None and r["score"] is None),
    (
        'label contains "liver"',
        lambda r: r["label_name"] is not None and "liver" in r["label_name"],
    ),
    ('label contains "é"', lambda r: r["label_name"] is not None and "é" in r["label_name"]),
    ("label contains 'O\\'Brien'", lambda r: (r["label_name"] or "").startswith("O'Brien")),
    ('label == "say \\"hi\\""', lambda r: r["label_name"] == 'say "hi"'),
    ('label == "line\\nbreak"', lambda r: r["label_name"] == "line\nbreak"),
    ('label == "back\\\\slash"', lambda r: r["label_name"] == "back\\slash"),
    ('tags contains "arterial"', lambda r: r["tags"] is not None and "arterial" in r["tags"]),
    (
        'not tags contains "late"',
        lambda r: r["tags"] is not None and "late" not in r["tags"],
    ),
    ("score < -1e-4", lambda r: r["score"] is not None and r["score"] < -1e-4),
    ("score >= 0.001", lambda r: r["score"] is not None and r["score"] >= 0.001),
    ("score == -1.5 or score == 2", lambda r: r["score"] in (-1.5, 2.0)),
    ("age > -3 and age <= 5", lambda r: r["age"] is not None and -3 < r["age"] <= 5),
    ("age < 5.5", lambda r: r["age"] is not None and r["age"] < 5.5),
    ("age not in [1, 4, 7]", lambda r: r["age"] is not None and r["age"] not in (1, 4, 7)),
    ("contrast == true", lambda r: r["contrast"] is True),
    ("contrast != TRUE", lambda r: r["contrast"] is False),
    (
        'study_date between "2020-01-01" and "20200229"',
        lambda r: (
            r["study_date"] is not None
            and dt.date(2020, 1, 1) <= r["study_date"] <= dt.date(2020, 2, 29)
        ),
    ),
    ('study_date == "20200131"', lambda r: r["study_date"] == dt.date(2020, 1, 31)),
    ('site == "Zürich"', lambda r: r["site"] == "Zürich"),
    ('modality < "MR"', lambda r: r["modality"] is not None and r["modality"] < "MR"),
    (
        'modality == "CT" AND site IN ["A"] Or age IS NOT NULL And NOT contrast == FALSE',
        lambda r: (
            (r["modality"] == "CT" and r["site"] == "A")
            or (r["age"] is not None and r["contrast"] is True)
        ),
    ),
    (
        "((((n == 1)))) or (n == 2 and (n != 3 or (not (n > 5))))",
        lambda r: r["n"] in (1, 2),
    ),
    ("not not n == 3", lambda r: r["n"] == 3),
    ("n in [1,2,3]\n\tand\tn != 2", lambda r: r["n"] in (1, 3)),
]


@pytest.mark.parametrize(("text", "predicate"), EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_examples_match_python(con: Any, text: str, predicate: Callable[[dict], bool]) -> None:
    expr = parse(text, SCHEMA)
    expected = [r["id"] for r in ROWS if predicate(r)]
    assert ref_ids(expr) == expected
    assert duck_ids(con, expr) == expected
    if not has_list_contains(expr):
        assert arrow_ids(expr) == expected
    sql, params = to_sql(expr, SCHEMA)
    assert_whitelisted_sql(sql, params)
    assert parse(describe(expr), SCHEMA) == expr


def test_examples_select_something() -> None:
    """Guard against a degenerate data set that makes every example trivially empty."""
    nonempty = [text for text, pred in EXAMPLES if any(pred(r) for r in ROWS)]
    assert len(nonempty) >= len(EXAMPLES) - 4


def test_ast_shape_and_sql() -> None:
    expr = parse('modality == "CT" and label == "liver tumour" and site in ["A", "B"]', SCHEMA)
    assert expr == And(
        (
            Compare("modality", "==", "CT"),
            Compare("label", "==", "liver tumour"),
            In("site", ("A", "B"), False),
        )
    )
    sql, params = to_sql(expr, SCHEMA)
    assert sql == '("modality" = ? AND ("label_name") = ? AND "site" IN (?, ?))'
    assert params == ["CT", "liver tumour", "A", "B"]
    assert to_sql(expr, SCHEMA) == (sql, params)  # deterministic
    assert describe(expr) == 'modality == "CT" and label == "liver tumour" and site in ["A", "B"]'


def test_literals_and_precedence() -> None:
    assert parse("score == -1e-3", SCHEMA) == Compare("score", "==", -0.001)
    assert parse("score == 2", SCHEMA) == Compare("score", "==", 2.0)
    assert isinstance(parse("score == 2", SCHEMA).value, float)  # type: ignore[union-attr]
    assert parse("age == -7", SCHEMA) == Compare("age", "==", -7)
    assert parse("age >= .5", SCHEMA) == Compare("age", ">=", 0.5)
    assert parse("score < 1.5E+2", SCHEMA) == Compare("score", "<", 150.0)
    assert parse("contrast == False", SCHEMA) == Compare("contrast", "==", False)
    assert parse("study_date <= '20200131'", SCHEMA) == Compare(
        "study_date", "<=", dt.date(2020, 1, 31)
    )
    # and binds tighter than or; not binds tighter than and
    assert parse("n == 1 or n == 2 and not n == 3", SCHEMA) == Or(
        (Compare("n", "==", 1), And((Compare("n", "==", 2), Not(Compare("n", "==", 3)))))
    )
    assert parse("age between 1 and 2 and n == 1", SCHEMA) == And(
        (Between("age", 1, 2), Compare("n", "==", 1))
    )
    assert parse("tags is not null", SCHEMA) == IsNull("tags", True)
    sql, params = to_sql(parse('tags contains "x" and label contains "y"', SCHEMA), SCHEMA)
    assert sql == '(list_contains("tags", ?) AND contains(("label_name"), ?))'
    assert params == ["x", "y"]


def test_large_in_list(con: Any) -> None:
    values = list(range(-300, 300))
    expr = parse(f"age in [{', '.join(map(str, values))}]", SCHEMA)
    sql, params = to_sql(expr, SCHEMA)
    assert sql == '"age" IN (' + ", ".join(["?"] * len(values)) + ")"
    assert params == values
    assert duck_ids(con, expr) == [r["id"] for r in ROWS if r["age"] is not None]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

ERRORS: list[tuple[str, str]] = [
    ('modalty == "CT"', r"unknown column 'modalty'; did you mean 'modality'\?.*known columns: "),
    ('MODALITY == "CT"', r"unknown column 'MODALITY'; did you mean 'modality'"),
    ("(age == 1", r"unbalanced '\(': missing '\)'.* at position 0"),
    ("age == 1)", r"unbalanced '\)'.*at position 8"),
    ("age == 1 and", r"expected a condition after 'and' at end of input \(position 12\)"),
    ("age ==", r"expected a value after '==' at end of input"),
    ("age", r"expected an operator after column 'age'"),
    ("and age == 1", r"expected a column name .*near 'and' at position 0"),
    ("age == 1 age == 2", r"expected 'and', 'or' or the end of the input"),
    ("age == foo", r"expected a value .*strings need quotes near 'foo' at position 7"),
    ("age == null", r"write 'age is null'"),
    ("age == 12abc", r"bad number literal near '12abc'"),
    ("age == 1.2.3", r"bad number literal"),
    ("age == 1\u0662", r"bad number literal"),
    ('study_date == "\u0662\u0660\u0662\u0660-01-31"', r"is not a real date"),
    ("age == --1", r"bad number literal"),
    ("age == 99999999999999999999", r"out of range"),
    ("score == 1e999", r"out of range"),
    ('label == "liver', r"unterminated string near '\"liver' at position 9"),
    ("label == 'liver\\'", r"unterminated string"),
    ('label == "a\\qb"', r"invalid escape '\\q'"),
    ('age == "5"', r"type mismatch: column 'age' is int, expected a number"),
    ("label == 5", r"type mismatch: column 'label' is str, expected a string"),
    ("contrast < true", r"type mismatch: '<' is not defined for column 'contrast' of type bool"),
    ("contrast between true and false", r"'between' is not defined for column 'contrast'"),
    ("age contains 'x'", r"'contains' needs a str or list\[str\] column; column 'age' is int"),
    ("label contains 5", r"'contains' needs a quoted string"),
    ('tags == "x"', r"column 'tags' is list\[str\]; only 'contains' and 'is null' apply"),
    ("contrast == 1", r"column 'contrast' is bool, expected true or false"),
    ('study_date == "2020-02-30"', r"'2020-02-30' is not a real date"),
    ('study_date == "31/01/2020"', r"is not a real date"),
    ("study_date == 20200131", r"column 'study_date' is date"),
    ("age = 1", r"unknown operator '='.*use '=='"),
    ("age <> 1", r"expected a value .*after '<', got '>'"),
    ("age in [1, 2", r"unbalanced '\[': missing '\]'"),
    ("age in [1, 2,]", r"expected a value"),
    ("age in []", r"empty 'in' list"),
    ("age in 1", r"expected '\[' after 'in'"),
    ("age not 1", r"expected 'in' after 'age not'"),
    ("age is 1", r"expected 'null' after 'age is'"),
    ("age between 1 or 2", r"expected 'and' in 'age between"),
    ("modalité == 'CT'", r"unknown character 'é'"),
    ("age == 1; DROP TABLE images", r"unknown character ';' near ';' at position 8"),
    ("age == 1 -- comment", r"bad number literal|unknown"),
    ("", r"empty filter"),
    ("   ", r"empty filter"),
    ("age == 1\x00", r"control character U\+0000 not allowed .*position 8"),
    ("age == '\x07'", r"control character U\+0007"),
    ("age == 1\u202e", r"control character U\+202E"),
    ("label == 'a\nb'", r"raw control character in string"),
    ("x" * (MAX_LENGTH + 1), r"input too long \(4097 characters, at most 4096\)"),
    ("(" * (MAX_DEPTH + 1) + "n == 1" + ")" * (MAX_DEPTH + 1), r"nested too deeply"),
    ("not " * (MAX_DEPTH + 1) + "n == 1", r"nested too deeply"),
    (" or ".join(["n>1"] * (MAX_NODES + 1)), r"too large \(more than 500"),
    ("n in [" + ",".join(["1"] * (MAX_IN_VALUES + 1)) + "]", r"'in' list longer than 1000"),
]


@pytest.mark.parametrize(("text", "pattern"), ERRORS, ids=[t[:40] for t, _ in ERRORS])
def test_errors(text: str, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern) as info:
        parse(text, SCHEMA)
    message = str(info.value)
    assert message.startswith("invalid filter: ")
    if len(text) <= MAX_LENGTH:
        assert "position" in message
        assert "^" in message.splitlines()[-1]
        assert "\x00" not in message


def test_limits_are_inclusive() -> None:
    """Inputs exactly at each limit parse, to the filter they spell."""
    one = Compare("n", "==", 1)
    assert parse("(" * MAX_DEPTH + "n == 1" + ")" * MAX_DEPTH, SCHEMA) == one
    nots = parse("not " * MAX_DEPTH + "n == 1", SCHEMA)
    for _ in range(MAX_DEPTH):
        assert isinstance(nots, Not)
        nots = nots.item
    assert nots == one
    chain = parse(" or ".join(["n>1"] * (MAX_NODES - 1)), SCHEMA)
    assert chain == Or((Compare("n", ">", 1),) * (MAX_NODES - 1))
    values = parse("n in [" + ",".join(["1"] * MAX_IN_VALUES) + "]", SCHEMA)
    assert values == In("n", (1,) * MAX_IN_VALUES, False)
    longest = "n == " + "0" * (MAX_LENGTH - 5)
    assert len(longest) == MAX_LENGTH and parse(longest, SCHEMA) == Compare("n", "==", 0)


def test_caret_excerpt_points_at_the_problem() -> None:
    text = 'modality == "CT" and xyz == 1'
    with pytest.raises(InvalidInput) as info:
        parse(text, SCHEMA)
    lines = str(info.value).splitlines()
    assert "near 'xyz' at position 21" in lines[0]
    assert lines[1].strip() == text
    assert lines[2].index("^") - lines[1].index("m") == 21


def test_not_a_string_or_bad_schema() -> None:
    with pytest.raises(InvalidInput):
        parse(123, SCHEMA)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a valid filter identifier"):
        parse("x == 1", {"in": Column("in", "int")})
    with pytest.raises(InvalidInput, match="unknown type"):
        parse("x == 1", {"x": Column("x", "blob")})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# where_kwargs, validate
# ---------------------------------------------------------------------------------------------


def test_where_kwargs(con: Any) -> None:
    expr = where_kwargs(SCHEMA, modality="CT", site=["A", "B"], age=None)
    assert expr == And((Compare("modality", "==", "CT"), In("site", ("A", "B")), IsNull("age")))
    assert describe(expr) == 'modality == "CT" and site in ["A", "B"] and age is null'
    assert where_kwargs(SCHEMA, age=slice(10, 40)) == Between("age", 10, 40)
    assert where_kwargs(SCHEMA, age=slice(10, None)) == Compare("age", ">=", 10)
    assert where_kwargs(SCHEMA, age=slice(None, 40)) == Compare("age", "<=", 40)
    assert where_kwargs(SCHEMA, site={"C", "A", "B"}) == In("site", ("A", "B", "C"))
    assert where_kwargs(SCHEMA, tags="late") == Contains("tags", "late")
    assert where_kwargs(SCHEMA, score=2) == Compare("score", "==", 2.0)
    assert where_kwargs(SCHEMA, study_date=slice("2020-01-01", dt.date(2020, 2, 29))) == Between(
        "study_date", dt.date(2020, 1, 1), dt.date(2020, 2, 29)
    )
    assert where_kwargs(SCHEMA, contrast=True) == Compare("contrast", "==", True)
    assert duck_ids(con, where_kwargs(SCHEMA, label="liver tumour", n=(1, 2))) == ref_ids(
        parse('label == "liver tumour" and n in [1, 2]', SCHEMA)
    )


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"modalty": "CT"}, r"unknown column 'modalty'; did you mean 'modality'"),
        ({"age": "5"}, r"column 'age' is int"),
        ({"age": True}, r"column 'age' is int"),
        ({"contrast": 1}, r"column 'contrast' is bool"),
        ({"age": []}, r"empty list"),
        ({"age": slice(None, None)}, r"needs a lower or an upper bound"),
        ({"age": slice(1, 5, 2)}, r"step"),
        ({"contrast": slice(False, True)}, r"'between' is not defined"),
        ({"study_date": "2020-13-01"}, r"not a real date"),
        ({"study_date": dt.datetime(2020, 1, 1)}, r"column 'study_date' is date"),
        ({"label": "a\x00b"}, r"control character U\+0000"),
        ({"score": float("nan")}, r"finite"),
        ({"age": 2**64}, r"out of range"),
        ({"age": object()}, r"got a object"),
        ({}, r"at least one condition"),
    ],
)
def test_where_kwargs_errors(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        where_kwargs(SCHEMA, **kwargs)


def test_validate_hand_built_asts() -> None:
    assert validate(Compare("study_date", "==", "20200131"), SCHEMA) == Compare(
        "study_date", "==", dt.date(2020, 1, 31)
    )
    _sql, params = to_sql(Compare("study_date", "==", "20200131"), SCHEMA)
    assert params == [dt.date(2020, 1, 31)]
    bad: list[Any] = [
        Compare("age", "; DROP TABLE images; --", 1),
        Compare('age" OR 1=1 --', "==", 1),
        Compare("nope", "==", 1),
        In("age", ()),
        In("age", [1, 2]),  # type: ignore[arg-type]
        And((Compare("age", "==", 1),)),
        Or([]),  # type: ignore[arg-type]
        Contains("label", 5),  # type: ignore[arg-type]
        "age == 1",
        None,
    ]
    for expr in bad:
        with pytest.raises(InvalidInput):
            to_sql(expr, SCHEMA)
    deep: Expr = Compare("n", "==", 1)
    for _ in range(10_000):
        deep = Not(deep)
    with pytest.raises(InvalidInput, match="nested too deeply"):
        to_sql(deep, SCHEMA)
    wide = Or(tuple(Compare("n", "==", i) for i in range(MAX_NODES)))
    with pytest.raises(InvalidInput, match="too large"):
        to_sql(wide, SCHEMA)


def test_pyarrow_limits() -> None:
    with pytest.raises(InvalidInput, match="no pyarrow equivalent"):
        to_pyarrow(parse('tags contains "x"', SCHEMA), SCHEMA)
    computed = {"x": Column("x", "int", sql="a + b")}
    with pytest.raises(InvalidInput, match="no pyarrow equivalent"):
        to_pyarrow(parse("x == 1", computed), computed)


# ---------------------------------------------------------------------------------------------
# Injection attempts
# ---------------------------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE images; --",
    '" OR 1=1 --',
    "' OR '1'='1",
    'x" UNION SELECT * FROM images --',
    "*/ DROP TABLE images /*",
    "%' OR 1=1; --",
    "\\'; DROP TABLE images; --",
    "label_name",
    '"label_name"',
    "?",
]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_values_are_literal(con: Any, payload: str) -> None:
    for expr in (
        parse(f"modality == {_quote(payload)}", SCHEMA),
        parse(f"site in [{_quote(payload)}, {_quote(payload)}]", SCHEMA),
        parse(f"modality contains {_quote(payload)}", SCHEMA),
        parse(f"tags contains {_quote(payload)}", SCHEMA),
        where_kwargs(SCHEMA, modality=payload),
        where_kwargs(SCHEMA, site=[payload]),
    ):
        sql, params = to_sql(expr, SCHEMA)
        assert_whitelisted_sql(sql, params)
        assert payload in params
        assert duck_ids(con, expr) == []
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


def test_stored_injection_string_matches_only_itself(con: Any) -> None:
    payload = "'; DROP TABLE images; --"
    expr = parse(f"label == {_quote(payload)}", SCHEMA)
    ids = duck_ids(con, expr)
    assert ids and ids == [r["id"] for r in ROWS if r["label_name"] == payload]
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


@pytest.mark.parametrize(
    "text",
    [
        "modality == 'CT' or 1 == 1",
        'modality == "CT"; DROP TABLE images',
        "modality == 'CT' -- and site == 'A'",
        "modality == 'CT' /* x */",
        "modality == 'CT' UNION SELECT 1",
        "DROP == 1",
        "modality == CT",
        'label_name == "x"',
    ],
)
def test_injection_in_structure_is_rejected(con: Any, text: str) -> None:
    with pytest.raises(InvalidInput):
        parse(text, SCHEMA)
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


# ---------------------------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------------------------

FRAGMENTS = [
    *SCHEMA,
    "label_name",
    "and",
    "OR",
    "not",
    "In",
    "is",
    "NULL",
    "between",
    "contains",
    "true",
    "False",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "(",
    ")",
    "[",
    "]",
    ",",
    '"CT"',
    "'A'",
    '"',
    "'",
    "\\",
    ";",
    "--",
    "/*",
    "*/",
    "DROP TABLE images",
    "UNION SELECT",
    "SELECT",
    "1=1",
    "0",
    "-1",
    "1.5e-3",
    "-.5",
    "1e999",
    '"2020-01-31"',
    "'20200229'",
    '"a\\"b"',
    "'\\n'",
    "é",
    "腫瘍",
    "\x00",
    "\u202e",
    "\n",
    "x" * 300,
]
SOUP = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=25).flatmap(
    lambda parts: st.sampled_from([" ", "", "  "]).map(lambda sep: sep.join(parts))
)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _check_any_text(con: Any, text: str) -> None:
    try:
        expr = parse(text, SCHEMA)
    except InvalidInput as err:
        assert str(err).startswith("invalid filter: ")
        return
    sql, params = to_sql(expr, SCHEMA)
    assert_whitelisted_sql(sql, params)
    assert parse(describe(expr), SCHEMA) == expr
    assert duck_ids(con, expr) == ref_ids(expr)


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzz_random_text(con: Any, text: str) -> None:
    _check_any_text(con, text)


@FUZZ
@given(text=SOUP)
def test_fuzz_token_soup(con: Any, text: str) -> None:
    _check_any_text(con, text)


LONG_TEXT = st.tuples(
    st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["n == 1 or ", "(", "not "])),
    st.integers(MAX_LENGTH - 10, MAX_LENGTH + 50),
).map(lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]])


@settings(max_examples=30, deadline=None)
@given(text=LONG_TEXT)
def test_fuzz_long_text(text: str) -> None:
    """Over the limit: refused, naming the limit, before any parsing. Within it: a parsed
    filter describes itself back to the same filter, or a clean "invalid filter" error."""
    if len(text) > MAX_LENGTH:
        with pytest.raises(
            InvalidInput, match=rf"input too long \({len(text)} characters, at most"
        ):
            parse(text, SCHEMA)
        return
    try:
        expr = parse(text, SCHEMA)
    except InvalidInput as err:
        assert str(err).startswith("invalid filter: ")
        return
    assert parse(describe(expr), SCHEMA) == expr


# Random valid ASTs ---------------------------------------------------------------------------

STRINGS = st.one_of(
    st.sampled_from(["CT", "MR", "ct", "A", "B", "Zürich", "liver", *[x for x in LABELS if x]]),
    st.sampled_from(TAGS),
    st.sampled_from(INJECTIONS),
    st.text(
        alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
        | st.sampled_from("\n\t"),
        max_size=6,
    ).filter(
        lambda s: not any(c in s for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    ),
)
INTS = st.one_of(st.integers(-10, 100), st.sampled_from([-(2**63), 2**63 - 1]))
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1e-3, -1e-3, -1.5, 2.5, 100.0, 1e16, -2.5e-8]),
    st.floats(-100, 100, allow_nan=False).map(lambda f: round(f, 3)),
)
DATES = st.one_of(
    st.sampled_from([dt.date(2020, 1, 31), dt.date(2020, 2, 29), dt.date(2019, 12, 31)]),
    st.dates(dt.date(2017, 1, 1), dt.date(2024, 1, 1)),
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "str": STRINGS,
    "int": st.one_of(INTS, INTS, FLOATS),
    "float": FLOATS,
    "bool": st.booleans(),
    "date": DATES,
}


@st.composite
def leaves(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from(sorted(SCHEMA)))
    ctype = SCHEMA[name].type
    kinds = ["isnull"]
    if ctype in ("str", "list[str]"):
        kinds.append("contains")
    if ctype != "list[str]":
        kinds += ["compare", "in"]
    if ctype in ("str", "int", "float", "date"):
        kinds.append("between")
    kind = draw(st.sampled_from(kinds))
    if kind == "isnull":
        return IsNull(name, draw(st.booleans()))
    if kind == "contains":
        return Contains(name, draw(st.sampled_from(["liver", "a", "", "'", "é", *TAGS]) | STRINGS))
    values = VALUES[ctype]
    if kind == "compare":
        ops = ["==", "!="] if ctype == "bool" else ["==", "!=", "<", "<=", ">", ">="]
        return Compare(name, draw(st.sampled_from(ops)), draw(values))
    if kind == "in":
        return In(name, tuple(draw(st.lists(values, min_size=1, max_size=5))), draw(st.booleans()))
    return Between(name, draw(values), draw(values))


ASTS = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=4).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=4).map(lambda xs: Or(tuple(xs))),
        children.map(Not),
    ),
    max_leaves=12,
)


def _mutate(args: tuple[str, int, int, str]) -> str:
    text, at, cut, insert = args
    at %= len(text) + 1
    return text[:at] + insert + text[at + cut :]


MUTATED = st.tuples(
    ASTS.map(describe),
    st.integers(0, 10_000),
    st.integers(0, 3),
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)),
).map(_mutate)


@FUZZ
@given(text=MUTATED)
def test_fuzz_mutated_valid_text(con: Any, text: str) -> None:
    """Near-valid filters (a describe() output with a splice) parse cleanly or fail cleanly."""
    _check_any_text(con, text)


@FUZZ
@given(expr=ASTS)
def test_generated_asts_round_trip_and_agree(con: Any, expr: Expr) -> None:
    assert validate(expr, SCHEMA) == expr
    text = describe(expr)
    assert parse(text, SCHEMA) == expr
    sql, params = to_sql(expr, SCHEMA)
    assert_whitelisted_sql(sql, params)
    expected = ref_ids(expr)
    assert duck_ids(con, expr) == expected
    if not has_list_contains(expr):
        assert arrow_ids(expr) == expected
