"""HTTP Range parsing (RFC 9110 §14) against a reference: Python slicing of the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.serve.rawzarr_support import parse_multipart

from atlas.errors import InvalidInput
from atlas.serve.ranges import (
    MAX_RANGES,
    ByteRange,
    Multipart,
    RangeOutcome,
    plan_ranges,
    unsatisfied_content_range,
)


def reference(spec: tuple[int | None, int | None], size: int) -> range | None:
    """The byte positions a range-spec selects, by Python slicing (None: unsatisfiable)."""
    first, last = spec
    if first is None:  # suffix
        assert last is not None
        sel = range(size)[-last:] if last else range(0)
    else:
        sel = range(size)[first : (last + 1) if last is not None else None]
    return sel if len(sel) else None


def text(spec: tuple[int | None, int | None]) -> str:
    first, last = spec
    return f"{'' if first is None else first}-{'' if last is None else last}"


specs = st.one_of(
    st.tuples(st.integers(0, 300), st.none()),
    st.tuples(st.none(), st.integers(0, 300)),
    st.integers(0, 300).flatmap(lambda a: st.tuples(st.just(a), st.integers(a, a + 300))),
)


@settings(max_examples=400, deadline=None)
@given(size=st.integers(0, 256), wanted=st.lists(specs, min_size=1, max_size=MAX_RANGES))
def test_ranges_select_what_slicing_selects(size: int, wanted: list) -> None:
    data = bytes(i % 251 for i in range(size))
    plan = plan_ranges("bytes=" + ", ".join(text(s) for s in wanted), size)
    selected = [reference(s, size) for s in wanted]
    covered = {i for sel in selected if sel is not None for i in sel}
    if size == 0 and any(s[0] is None and s[1] for s in wanted):
        assert plan.outcome is RangeOutcome.FULL  # a suffix of nothing: the empty body, 200
        return
    if not covered:
        assert plan.outcome is RangeOutcome.UNSATISFIABLE
        return
    assert plan.outcome is RangeOutcome.PARTIAL
    served = [i for r in plan.ranges for i in range(r.start, r.stop)]
    assert served == sorted(covered)  # exactly the union, once each, in order
    for a, b in zip(plan.ranges, plan.ranges[1:], strict=False):
        assert a.stop < b.start  # disjoint and not adjacent (merged)
    if len(plan.ranges) > 1:
        parts = Multipart(plan.ranges, size, "application/octet-stream")
        body = b"".join(parts.body(lambda r: iter([data[r.start : r.stop]])))
        assert len(body) == parts.length
        got = parse_multipart(body, parts.boundary)
        assert [p[1] for p in got] == [data[r.start : r.stop] for r in plan.ranges]
        assert [p[0]["Content-Range"] for p in got] == [
            f"bytes {r.start}-{r.stop - 1}/{size}" for r in plan.ranges
        ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", [(0, 1)]),
        ("bytes=10-", [(10, 100)]),
        ("bytes=-10", [(90, 100)]),
        ("bytes=-1000", [(0, 100)]),
        ("bytes=95-1000", [(95, 100)]),
        ("BYTES=1-2", [(1, 3)]),
        ("bytes=0-9, 20-29,,", [(0, 10), (20, 30)]),
        ("bytes=0-9,5-15,16-20", [(0, 21)]),
        ("bytes=50-59,0-9", [(0, 10), (50, 60)]),
        ("bytes=0-1,200-300", [(0, 2)]),
        ("bytes=99999999999999999999999999-", None),
        ("bytes=0-99999999999999999999999999999999", [(0, 100)]),
    ],
)
def test_range_forms(header: str, expected: list | None) -> None:
    plan = plan_ranges(header, 100)
    if expected is None:
        assert plan.outcome is RangeOutcome.UNSATISFIABLE
    else:
        assert plan.outcome is RangeOutcome.PARTIAL
        assert [(r.start, r.stop) for r in plan.ranges] == expected


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes", "bytes=", "items=0-5", "bytes=5-2", "bytes=a-b", "bytes=-", "bytes=1-2-3",
     "bytes=0x10-", "bytes= 1 2-", "bytes=+1-5", "bytes=1-5;x"],
)  # fmt: skip
def test_malformed_headers_are_ignored(header: str | None) -> None:
    assert plan_ranges(header, 100).outcome is RangeOutcome.FULL


def test_unsatisfiable_and_too_many() -> None:
    assert plan_ranges("bytes=100-", 100).outcome is RangeOutcome.UNSATISFIABLE
    assert plan_ranges("bytes=-0", 100).outcome is RangeOutcome.UNSATISFIABLE
    assert plan_ranges("bytes=0-", 0).outcome is RangeOutcome.UNSATISFIABLE
    assert unsatisfied_content_range(100) == "bytes */100"
    many = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    with pytest.raises(InvalidInput, match=f"17 ranges; at most {MAX_RANGES}"):
        plan_ranges(many, 1000)
    assert ByteRange(3, 8).content_range(10) == "bytes 3-7/10"
