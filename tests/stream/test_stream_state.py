"""Exact resume: a tiny state restores the continuation, with another number of workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.stream.plan_catalog import table_from

from atlas.errors import InvalidInput
from atlas.stream import (
    BalancedSampler,
    EpochOrder,
    EpochPlan,
    GridSampler,
    PatchSampler,
    SliceSampler,
    StreamState,
    shard_for,
)

SHAPES = [(16, 32, 32), (20, 24, 24), (8, 16, 16), (12, 20, 28)]
BOXES = [(0, "tumour", (2, 4, 4), (6, 10, 12), 50), (3, "tumour", (1, 1, 1), (5, 5, 5), 20)]


def run(state: StreamState, table, world: int, workers: int, batch: int, steps: int | None):
    """Train ``steps`` steps (None: to the end of the epoch) from ``state``.

    Returns the samples seen, step by step (all ranks together), and the state after.
    """
    state.check_plan(table.fingerprint())
    epoch = EpochPlan(table, state.make_sampler(), seed=state.seed, epoch=state.epoch,
                      order=state.make_order())  # fmt: skip
    n = len(epoch)
    streams = {
        (r, w): list(shard_for(r, world, w, workers, n, state.consumed, batch=batch))
        for r in range(world)
        for w in range(workers)
    }
    seen = []
    step = 0
    consumed = state.consumed
    while consumed < n and (steps is None or step < steps):
        taken = []
        for r in range(world):
            w = step % workers  # the DataLoader's round robin over workers
            mine, streams[(r, w)] = streams[(r, w)][:batch], streams[(r, w)][batch:]
            taken.extend(mine)
        seen.append([(s.index, s.volume, s.start, s.stop, s.label) for s in epoch.specs(taken)])
        consumed += len(taken)
        step += 1
    return seen, state.advanced(consumed - state.consumed)


@pytest.mark.parametrize(
    "sampler",
    [
        PatchSampler((4, 8, 8), per_volume=9),
        SliceSampler("sagittal"),
        BalancedSampler(6, labels=["tumour"], positive=0.7, per_volume=15),
        GridSampler(8, overlap=0.25),
    ],
    ids=lambda s: s.name,
)
def test_stop_mid_epoch_and_resume_with_other_workers(sampler) -> None:
    table = table_from(SHAPES, BOXES)
    fresh = StreamState(epoch=2, seed=13, sampler=sampler.params(),
                        order=EpochOrder(block=4, buffer=32).params(),
                        plan=table.fingerprint())  # fmt: skip
    # the reference: one rank, one worker, global batch 8, straight through
    reference, _ = run(fresh, table, world=1, workers=1, batch=8, steps=None)
    flat = [x for step in reference for x in sorted(step)]
    # two ranks x three workers for 3 steps, checkpoint, then four workers, one rank
    first, state = run(fresh, table, world=2, workers=3, batch=4, steps=3)
    saved = json.loads(json.dumps(state.state_dict()))
    assert len(json.dumps(saved)) < 600  # a tiny state: no sample list, no RNG state
    resumed = StreamState.from_state_dict(saved)
    assert resumed == state and resumed.consumed == 3 * 8
    rest, end = run(resumed, table, world=1, workers=4, batch=8, steps=None)
    got = [x for step in first + rest for x in sorted(step)]
    assert got == flat  # exactly the same samples, at the same global positions
    assert [s[0] for s in got] == list(range(len(got)))
    assert end.consumed == len(flat) and end.next_epoch().consumed == 0


def test_a_state_refuses_another_plan_and_bad_input() -> None:
    table = table_from(SHAPES)
    other = table_from(SHAPES[:3])
    state = StreamState(sampler=PatchSampler(4).params(), plan=table.fingerprint())
    state.check_plan(table.fingerprint())
    with pytest.raises(InvalidInput, match="another plan"):
        state.check_plan(other.fingerprint())
    good = state.state_dict()
    with pytest.raises(InvalidInput, match="consumed"):
        StreamState.from_state_dict({**good, "consumed": -1})
    with pytest.raises(InvalidInput, match="format"):
        StreamState.from_state_dict({**good, "format": 99})
    with pytest.raises(InvalidInput, match="unknown stream state keys"):
        StreamState.from_state_dict({**good, "rng": [1, 2]})
    with pytest.raises(InvalidInput, match="unknown sampler"):
        StreamState.from_state_dict({**good, "sampler": {"name": "magic"}}).make_sampler()
    with pytest.raises(InvalidInput, match="shuffle parameters"):
        StreamState.from_state_dict({**good, "order": {"blocks": 3}}).make_order()


def test_the_next_epoch_is_another_order() -> None:
    table = table_from(SHAPES)
    a = EpochPlan(table, PatchSampler(4, per_volume=20), seed=1, epoch=0)
    b = EpochPlan(table, PatchSampler(4, per_volume=20), seed=1, epoch=1)
    assert not np.array_equal(a.permutation, b.permutation)
    assert a.specs(np.arange(10)) != b.specs(np.arange(10))
