"""Splits by subject: stable, disjoint, with the fractions asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.stream.plan_catalog import table_from

from atlas.errors import InvalidInput
from atlas.stream import Split

subject_ids = st.lists(st.text(min_size=1, max_size=24), min_size=1, max_size=200, unique=True)


@settings(max_examples=80, deadline=None)
@given(
    subjects=subject_ids,
    weights=st.lists(st.integers(0, 10), min_size=1, max_size=5).filter(lambda w: sum(w) > 0),
    salt=st.text(min_size=1, max_size=10),
)
def test_every_subject_in_exactly_one_split(subjects, weights, salt) -> None:
    fractions = {f"part{i}": w / sum(weights) for i, w in enumerate(weights)}
    split = Split(fractions, salt=salt)
    assigned = split.assign(subjects + subjects[::-1])  # repeated ids: still one split each
    assert set(assigned) == set(subjects)
    for subject, name in assigned.items():
        assert name in fractions and fractions[name] > 0  # never a split with fraction 0
        assert split.of(subject) == name == Split(dict(fractions), salt=salt).of(subject)


@settings(max_examples=30, deadline=None)
@given(subjects=subject_ids, extra=subject_ids)
def test_a_subject_never_moves_when_others_arrive(subjects, extra) -> None:
    split = Split()
    before = split.assign(subjects)
    after = split.assign(extra + subjects)
    assert all(after[s] == before[s] for s in subjects)


def test_fractions_are_respected_and_salt_changes_the_assignment() -> None:
    ids = [f"subject-{i}" for i in range(20_000)]
    split = Split({"train": 0.7, "validation": 0.2, "test": 0.1})
    names = list(split.assign(ids).values())
    for name, fraction in split.fractions.items():
        share = names.count(name) / len(ids)
        assert abs(share - fraction) < 0.015, (name, share)
    other = Split({"train": 0.7, "validation": 0.2, "test": 0.1}, salt="other")
    moved = sum(split.of(s) != other.of(s) for s in ids[:2000])
    assert moved > 500


def test_the_assignment_is_the_same_in_another_process() -> None:
    ids = [f"s{i}" for i in range(50)]
    code = f"from atlas.stream import Split; print(','.join(Split().of(s) for s in {ids!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    assert out.split(",") == [Split().of(s) for s in ids]


@pytest.mark.parametrize(
    "fractions, match",
    [
        ({"train": 0.8, "test": 0.1}, "sum to 1"),
        ({"train": 1.2, "test": -0.2}, ">= 0"),
        ({"train": "0.5", "test": 0.5}, "number"),
        ({"": 1.0}, "non-empty"),
        ({}, "non-empty mapping"),
        ({"train": float("nan"), "test": 1.0}, ">= 0"),
    ],
)
def test_bad_fractions_are_refused(fractions, match) -> None:
    with pytest.raises(InvalidInput, match=match):
        Split(fractions)


def test_unknown_split_names_are_refused() -> None:
    with pytest.raises(InvalidInput, match="'tain'"):
        Split().check_name("tain")
    with pytest.raises(InvalidInput, match="salt"):
        Split(salt="")
    table = table_from([(4, 8, 8)] * 30)
    parts = [table.subset(n, Split()) for n in Split().names]
    assert sum(len(p) for p in parts) == 30
    with pytest.raises(InvalidInput, match="'holdout'"):
        table.subset("holdout", Split())


def test_import_stream_plans_without_torch() -> None:
    code = (
        "import sys, atlas.stream as s; assert 'numpy' not in sys.modules; "
        "from atlas.stream import PatchSampler, EpochPlan, plan_epochs, shard_for, StreamState; "
        "import atlas.stream.samplers, atlas.stream.table, atlas.stream.epoch; "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
