"""Epoch order: deterministic from (seed, epoch), block shuffle + bounded buffer, its quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas.errors import InvalidInput
from atlas.stream import EpochOrder, spearman
from atlas.stream.order import adjacent_same


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 3000),
    block=st.integers(1, 64),
    buffer=st.integers(1, 512),
    seed=st.integers(0, 2**40),
    epoch=st.integers(0, 10_000),
)
def test_order_is_a_permutation_and_a_pure_function(n, block, buffer, seed, epoch) -> None:
    order = EpochOrder(block=block, buffer=buffer)
    perm = order.permutation(n, seed, epoch)
    assert perm.dtype == np.int64 and perm.size == n
    assert np.array_equal(np.sort(perm), np.arange(n))
    assert np.array_equal(perm, EpochOrder(block=block, buffer=buffer).permutation(n, seed, epoch))


def test_reshuffled_every_epoch_and_seed() -> None:
    order = EpochOrder(block=8, buffer=64)
    a, b, c = (order.permutation(10_000, s, e) for s, e in ((1, 0), (1, 1), (2, 0)))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, order.permutation(10_000, 1, 0))


def test_blocks_stay_together_and_the_buffer_is_bounded() -> None:
    n, block, buffer = 20_000, 16, 256
    order = EpochOrder(block=block, buffer=buffer)
    blocks = order.blocks(n, 3, 0)
    # the block stream is whole blocks of consecutive ids, in a new order
    starts = blocks[::block]
    assert np.all(starts % block == 0)
    assert np.array_equal(
        blocks.reshape(-1, block) - starts[:, None], np.tile(np.arange(block), (n // block, 1))
    )
    assert not np.array_equal(starts, np.sort(starts))
    # the buffer never emits an item earlier than `buffer` steps before it arrived
    perm = order.permutation(n, 3, 0)
    arrival = np.empty(n, dtype=np.int64)
    arrival[blocks] = np.arange(n)
    out_pos = np.empty(n, dtype=np.int64)
    out_pos[perm] = np.arange(n)
    assert np.all(out_pos >= arrival - buffer)
    assert (out_pos != arrival).mean() > 0.9  # and it does move almost everything


def test_quality_no_visible_order_left() -> None:
    n = 50_000
    assert EpochOrder(shuffle=False).quality(n, 0, 0) == pytest.approx(1.0)
    assert np.array_equal(EpochOrder(shuffle=False).permutation(n, 5, 5), np.arange(n))
    # the buffer alone leaves the storage order; blocks remove it
    assert EpochOrder(block=n, buffer=64).quality(n, 0, 0) > 0.99
    for block in (1, 16, 256):
        # a random order of k blocks has a rank correlation of about 0 +- 1/sqrt(k - 1)
        bound = 4 / np.sqrt(n / block - 1)
        assert abs(EpochOrder(block=block, buffer=1024).quality(n, 0, 0)) < bound
    # locality: with blocks, neighbouring outputs often come from the same volume
    volume = np.arange(n) // 64
    local = adjacent_same(EpochOrder(block=64, buffer=16).permutation(n, 0, 0), volume)
    random = adjacent_same(EpochOrder(block=1, buffer=1).permutation(n, 0, 0), volume)
    assert local > 0.5 > random


def test_spearman_reference() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(1000)
        assert spearman(perm) == pytest.approx(spearmanr(np.arange(1000), perm)[0], abs=1e-9)
    assert spearman(np.arange(10)[::-1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("kw", [{"block": 0}, {"buffer": -3}, {"block": 2.5}, {"shuffle": "yes"}])
def test_bad_order_parameters(kw) -> None:
    with pytest.raises(InvalidInput):
        EpochOrder(**kw)
