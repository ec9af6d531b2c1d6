"""Ranks x DataLoader workers: nothing lost or repeated, the same global order for any split."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.stream.plan_catalog import table_from

from atlas.errors import InvalidInput
from atlas.stream import EpochOrder, EpochPlan, PatchSampler, shard_for
from atlas.stream.partition import rank_positions, step_positions


def dataloader_order(rank: int, world: int, workers: int, n: int, start: int, batch: int):
    """What one rank's DataLoader yields: its workers' batches, round robin."""
    per_worker = [
        list(shard_for(rank, world, w, workers, n, start, batch=batch)) for w in range(workers)
    ]
    chunks = [[p[i : i + batch] for i in range(0, len(p), batch)] for p in per_worker]
    out = []
    for step in itertools.count():
        got = [c[step] for c in chunks if step < len(c)]
        if not got:
            return out
        out.extend(got)


def global_batches(world: int, workers: int, n: int, start: int, batch: int):
    """The batches all ranks deliver at each step, concatenated rank by rank."""
    per_rank = [dataloader_order(r, world, workers, n, start, batch) for r in range(world)]
    steps = max(len(b) for b in per_rank)
    return [
        sorted(x for r in range(world) if s < len(per_rank[r]) for x in per_rank[r][s])
        for s in range(steps)
    ]


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 500),
    world=st.integers(1, 8),
    workers=st.integers(1, 6),
    batch=st.integers(1, 9),
    start_frac=st.floats(0, 1),
)
def test_union_is_exactly_the_epoch(n, world, workers, batch, start_frac) -> None:
    start = int(start_frac * n)
    got = np.concatenate(
        [
            shard_for(r, world, w, workers, n, start, batch=batch)
            for r in range(world)
            for w in range(workers)
        ]
    )
    assert np.array_equal(np.sort(got), np.arange(start, n))  # nothing lost, nothing twice


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    global_batch=st.sampled_from([4, 8, 12, 24]),
    start_steps=st.integers(0, 5),
    a=st.tuples(st.sampled_from([1, 2, 4]), st.integers(1, 4)),
    b=st.tuples(st.sampled_from([1, 2, 4]), st.integers(1, 4)),
)
def test_global_order_is_the_same_for_any_ranks_and_workers(
    n, global_batch, start_steps, a, b
) -> None:
    """Each step consumes the next contiguous run of global positions, however split."""
    start = min(n, start_steps * global_batch)
    expected = [list(p) for p in step_positions(1, global_batch, n, start)]
    for world, workers in (a, b):
        batch = global_batch // world
        assert global_batches(world, workers, n, start, batch) == expected


def test_epoch_samples_split_across_ranks_and_workers_are_the_epoch() -> None:
    table = table_from([(16, 32, 32), (20, 24, 24), (8, 16, 16)])
    epoch = EpochPlan(table, PatchSampler(8, per_volume=37), seed=4, epoch=1,
                      order=EpochOrder(block=4, buffer=16))  # fmt: skip
    whole = epoch.specs(np.arange(len(epoch)))
    for world, workers in ((1, 1), (2, 3), (3, 2), (4, 4)):
        parts = []
        for r in range(world):
            for w in range(workers):
                for specs in epoch.iter_specs(shard_for(r, world, w, workers, len(epoch)), 10):
                    parts.extend(specs)
        assert sorted(parts, key=lambda s: s.index) == whole
    assert [s.index for s in whole] == list(range(len(epoch)))


def test_bad_partition_arguments() -> None:
    with pytest.raises(InvalidInput, match="rank 2"):
        shard_for(2, 2, 0, 1, 10)
    with pytest.raises(InvalidInput, match="worker 3"):
        shard_for(0, 1, 3, 3, 10)
    with pytest.raises(InvalidInput, match="start 11"):
        rank_positions(0, 1, 10, start=11)
    with pytest.raises(InvalidInput, match="world size"):
        shard_for(0, 0, 0, 1, 10)
    with pytest.raises(InvalidInput, match="batch"):
        shard_for(0, 1, 0, 1, 10, batch=0)
