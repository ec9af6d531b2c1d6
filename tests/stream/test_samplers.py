"""Samplers: every sample a pure function of (seed, epoch, index), boxes from the index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.stream.plan_catalog import build_catalog, table_from, truth_boxes

from atlas.errors import InvalidInput
from atlas.index.catalog import open_atlas
from atlas.stream import (
    BalancedSampler,
    EpochPlan,
    GridSampler,
    PatchSampler,
    SliceSampler,
    plan_epochs,
    sampler_from_params,
)

SHAPES = [(16, 32, 32), (20, 40, 24), (8, 16, 16), (12, 32, 48)]


def _boxes(specs):
    return [(s.volume, s.start, s.stop, s.label) for s in specs]


def test_patch_sampler_is_uniform_inside_and_deterministic() -> None:
    table = table_from(SHAPES)
    sampler = PatchSampler(size=8, per_volume=50)
    specs = sampler.samples(table, seed=3, epoch=0)
    assert len(specs) == 50 * len(SHAPES)
    assert [s.volume for s in specs] == list(np.repeat(np.arange(len(SHAPES)), 50))
    for s in specs:
        shape = SHAPES[s.volume]
        assert s.size == (8, 8, 8) and s.level == 0 and s.label is None
        assert all(a >= 0 and b <= n for a, b, n in zip(s.start, s.stop, shape, strict=True))
    # the same (seed, epoch) gives the same samples; another epoch or seed others
    assert _boxes(specs) == _boxes(sampler.samples(table, seed=3, epoch=0))
    assert _boxes(specs) != _boxes(sampler.samples(table, seed=3, epoch=1))
    assert _boxes(specs) != _boxes(sampler.samples(table, seed=4, epoch=0))
    # starts cover the whole free range of every axis (uniform, not stuck at one place)
    v0 = np.array([s.start for s in specs if s.volume == 3])
    assert v0.min(axis=0).tolist() == [0, 0, 0] or v0.max(axis=0).tolist() == [4, 24, 40]
    big = np.array([s.start for s in PatchSampler(8, 2000).samples(table, 1, 0) if s.volume == 3])
    assert big.min(axis=0).tolist() == [0, 0, 0] and big.max(axis=0).tolist() == [4, 24, 40]


def test_any_sample_computes_alone() -> None:
    """A sample computed on its own (another process) equals it computed with the others."""
    table = table_from(SHAPES)
    for sampler in (
        PatchSampler((4, 8, 8), per_volume=7),
        SliceSampler("coronal", per_volume=3),
        GridSampler(8, overlap=0.5),
    ):
        plan = sampler.plan(table, 11, 2)
        every = plan.specs(np.arange(len(plan)))
        for c in (0, 5, len(plan) - 1):
            assert plan.specs([c])[0] == every[c]
        assert every == sampler_from_params(sampler.params()).plan(table, 11, 2).specs(
            np.arange(len(plan))
        )


def test_patches_larger_than_a_volume() -> None:
    table = table_from(SHAPES)
    padded = PatchSampler(size=(4, 20, 20), per_volume=3).samples(table, 0, 0)
    small = [s for s in padded if s.volume == 2]  # 8 x 16 x 16: overhangs y, x by 4
    assert all(s.start[1:] == (-2, -2) and s.stop[1:] == (18, 18) for s in small)
    with pytest.raises(InvalidInput, match=r"\(4, 20, 20\).*series00002"):
        PatchSampler(size=(4, 20, 20), pad=False).plan(table, 0, 0)


@pytest.mark.parametrize("bad", [0, -1, (4, 4), (4, -4, 4), (4, 4, 2.5), "8", True])
def test_bad_sizes_are_refused_at_construction(bad) -> None:
    with pytest.raises(InvalidInput, match="size"):
        PatchSampler(size=bad)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InvalidInput, match="per_volume"):
        PatchSampler(8, per_volume=0)
    with pytest.raises(InvalidInput, match="level"):
        PatchSampler(8, level=-1)
    with pytest.raises(InvalidInput, match="'diagonal'"):
        SliceSampler("diagonal")
    with pytest.raises(InvalidInput, match="overlap"):
        GridSampler(8, overlap=1.0)
    with pytest.raises(InvalidInput, match="positive"):
        BalancedSampler(8, labels=["liver"], positive=1.5)
    with pytest.raises(InvalidInput, match="label names"):
        BalancedSampler(8, labels=[])
    with pytest.raises(InvalidInput, match="'nope'"):
        sampler_from_params({"name": "nope"})
    with pytest.raises(InvalidInput, match="level 1 does not exist"):
        PatchSampler(8, level=1).plan(table_from(SHAPES), 0, 0)
    with pytest.raises(InvalidInput, match="seed"):
        PatchSampler(8).plan(table_from(SHAPES), -1, 0)


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_slice_sampler_gives_every_slice_once(axis) -> None:
    table = table_from(SHAPES)
    ax = {"axial": 0, "coronal": 1, "sagittal": 2}[axis]
    specs = SliceSampler(axis).samples(table, 0, 0)
    assert len(specs) == sum(s[ax] for s in SHAPES)
    for v, shape in enumerate(SHAPES):
        mine = [s for s in specs if s.volume == v]
        assert sorted(s.start[ax] for s in mine) == list(range(shape[ax]))
        for s in mine:
            size = list(shape)
            size[ax] = 1
            assert s.size == tuple(size)
            assert all(s.start[a] == 0 for a in range(3) if a != ax)
    crops = SliceSampler(axis, size=(6, 6), per_volume=5).samples(table, 1, 0)
    assert len(crops) == 5 * len(SHAPES)
    assert all(sorted(s.size) == [1, 6, 6] for s in crops)


def test_grid_sampler_covers_every_voxel() -> None:
    shapes = [(16, 32, 32), (20, 40, 24), (5, 16, 16)]
    table = table_from(shapes)
    for overlap in (0.0, 0.25, 0.5):
        sampler = GridSampler((8, 16, 16), overlap=overlap)
        specs = sampler.samples(table, 0, 0)
        assert specs == sampler.samples(table, 9, 4)  # no randomness
        for v, shape in enumerate(shapes):
            hits = np.zeros(shape, dtype=int)
            for s in (s for s in specs if s.volume == v):
                sl = tuple(slice(max(a, 0), b) for a, b in zip(s.start, s.stop, strict=True))
                hits[sl] += 1
            assert hits.min() >= 1  # every voxel covered
    tiles = GridSampler((8, 16, 16)).tiles(np.array([[16, 32, 32]]))
    assert tiles.tolist() == [[2, 2, 2]]


def test_balanced_sampler_counts_and_skips_a_label_that_covers_nothing() -> None:
    boxes = [
        (0, "tumour", (2, 4, 4), (6, 10, 12), 50),
        (1, "tumour", (0, 0, 0), (3, 3, 3), 9),
        (1, "liver", (0, 0, 0), (10, 20, 20), 800),
        (2, "liver", (1, 1, 1), (4, 4, 4), 0),  # a box that covers nothing
    ]
    table = table_from(SHAPES, boxes)
    assert table.counts.empty_boxes == 1 and len(table.boxes) == 3
    sampler = BalancedSampler((4, 4, 4), labels=["tumour"], positive=1.0, per_volume=200)
    plan = sampler.plan(table, 5, 0)
    assert plan.counts["volumes_with_label"] == {"tumour": 2}
    assert plan.counts["volumes_without_label"] == {"tumour": 2}
    assert plan.counts["empty_boxes"] == 1
    specs = plan.specs(np.arange(len(plan)))
    assert len(specs) == 200 * len(SHAPES)
    for s in specs:
        centre = tuple(a + 2 for a in s.start)
        if s.volume == 0:
            assert all(
                lo <= c < hi for c, lo, hi in zip(centre, (2, 4, 4), (6, 10, 12), strict=True)
            )
            assert s.label == "seg-1"
        elif s.volume == 1:
            assert all(0 <= c < 3 for c in centre)
    with pytest.raises(InvalidInput, match="'spleen'"):
        BalancedSampler(4, labels=["spleen"]).plan(table, 0, 0)
    # half positive: about half the samples of a volume with a box fall inside it
    half = BalancedSampler((2, 2, 2), labels=["tumour"], positive=0.5, per_volume=2000)
    inside = [
        all(lo <= a + 1 < hi for a, lo, hi in zip(s.start, (2, 4, 4), (6, 10, 12), strict=True))
        for s in half.samples(table, 1, 0)
        if s.volume == 0
    ]
    assert 0.45 < np.mean(inside) < 0.7  # 0.5 positive + uniform hits inside the box


@pytest.fixture(scope="module")
def real_table(tmp_path_factory: pytest.TempPathFactory):
    cat = build_catalog(tmp_path_factory.mktemp("samplers"), {"site-s": 2})
    return cat, plan_epochs(open_atlas(cat.stores, purpose="ai-training"))


def test_balanced_positives_fall_inside_the_real_label(real_table) -> None:
    cat, table = real_table
    sampler = BalancedSampler((3, 5, 5), labels=["liver tumour"], positive=1.0, per_volume=100)
    epoch = EpochPlan(table, sampler, seed=2, epoch=0)
    for spec in epoch.specs(np.arange(len(epoch))):
        vol = epoch.volumes[spec.volume]
        start, stop, _ = truth_boxes(cat.truth[vol.image_path])[2]
        centre = tuple(a + s // 2 for a, s in zip(spec.start, spec.size, strict=True))
        assert all(lo <= c < hi for c, lo, hi in zip(centre, start, stop, strict=True))
        assert spec.label == vol.labels[0]


@settings(max_examples=15, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
        min_size=1,
        max_size=6,
    ),
    size=st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 24)),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 1000),
)
def test_patches_always_have_the_size_and_touch_the_volume(shapes, size, seed, epoch) -> None:
    table = table_from(shapes)
    for s in PatchSampler(size, per_volume=3).samples(table, seed, epoch):
        shape = shapes[s.volume]
        assert s.size == size
        for a, b, n, k in zip(s.start, s.stop, shape, size, strict=True):
            if k <= n:
                assert a >= 0 and b <= n
            else:  # centred, padded on both sides
                assert a <= 0 and b >= n


def test_level_one_uses_the_pyramid_rule() -> None:
    table = table_from([(8, 600, 600), (6, 520, 400)], [(0, "t", (2, 100, 200), (4, 110, 220), 9)],
                       levels=2)  # fmt: skip
    specs = PatchSampler((4, 32, 32), per_volume=50, level=1, pad=False).samples(table, 0, 0)
    for s in specs:  # y and x halve, z (1.5 mm against 0.7 mm in plane) does not
        shape = [(8, 300, 300), (6, 260, 200)][s.volume]
        inside = zip(s.start, s.stop, shape, strict=True)
        assert s.level == 1 and all(a >= 0 and b <= n for a, b, n in inside)
    positives = BalancedSampler((2, 4, 4), labels=["t"], positive=1.0, per_volume=50, level=1)
    for s in positives.samples(table, 0, 0):
        if s.volume == 0:  # the box (2..4, 100..110, 200..220) at level 1: (2..4, 50..55, 100..110)
            centre = (s.start[0] + 1, s.start[1] + 2, s.start[2] + 2)
            assert 2 <= centre[0] < 4 and 50 <= centre[1] < 55 and 100 <= centre[2] < 110
