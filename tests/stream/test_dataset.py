"""AtlasDataset on a real catalog: sample dicts, MONAI transforms, order, resume, faults, input.

The catalog is built once for the module (synthetic CT studies with their SEG, ingested and
indexed on two local sites); every sample is checked against the volume read independently
(zarr-python through :func:`atlas.ome.open_image`) and the label against the truth map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.stream.plan_catalog import build_catalog

from atlas.errors import InvalidInput, NotFound, StoreUnavailable
from atlas.index.catalog import open_atlas
from atlas.ome import open_image
from atlas.read import Reader
from atlas.storage import FaultConfig, RetryPolicy, open_store
from atlas.stream import (
    AtlasDataset,
    BalancedSampler,
    GridAggregator,
    GridSampler,
    PatchSampler,
    SliceSampler,
    plan_epochs,
)

SIZE = (8, 16, 16)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("stream-dataset"), {"a": 3, "b": 2})


@pytest.fixture(scope="module")
def atlas(catalog):
    return open_atlas(catalog.stores, purpose="ai-training")


@pytest.fixture(scope="module")
def table(atlas):
    return plan_epochs(atlas, subset=None)


def _volume_truth(catalog, site: str, path: str) -> np.ndarray:
    return open_image(catalog.stores[site], path).read(0)


def _take(iterable, n: int) -> list:
    out = []
    for item in iterable:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_samples_are_dicts_that_match_the_stored_volume_and_labels(catalog, atlas) -> None:
    ds = AtlasDataset(
        atlas, PatchSampler(SIZE, per_volume=3, labels=True), subset=None, seed=3,
        reader=Reader(catalog.stores, engine="zarr"),
    )  # fmt: skip
    samples = list(ds)
    assert len(samples) == len(ds) == 5 * 3
    assert [s["meta"]["index"] for s in samples] == list(range(15))
    for s in samples:
        meta = s["meta"]
        assert set(s) == {"image", "label", "meta"}
        assert s["image"].shape == (1, *SIZE) and s["label"].shape == (1, *SIZE)
        start, stop = meta["region"].start, meta["region"].stop
        path = ds.table.volume(meta["volume_index"]).image_path
        assert catalog.site_of[path] == meta["site"]
        assert catalog.subject[path] == meta["subject_id"]
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        volume = _volume_truth(catalog, meta["site"], path)
        inside = tuple(
            slice(0, min(b, n) - a) for a, b, n in zip(start, stop, volume.shape, strict=True)
        )
        assert np.array_equal(s["image"][0].numpy()[inside], volume[box])
        assert np.array_equal(s["label"][0].numpy()[inside], catalog.truth[path][box])
        assert meta["affine"].shape == (4, 4) and len(meta["spacing"]) == 3
        # the affine places voxel 0 of the patch where voxel `start` of the volume is
        whole = open_image(catalog.stores[meta["site"]], path)
        expected = np.asarray(whole.metadata.affine) @ np.array([*start, 1.0])
        assert np.allclose(meta["affine"][:, 3], expected)
    report = ds.report()
    assert report.read == 15 and report.skipped == 0 and report.errors == 0
    assert {n: s.read for n, s in report.sites.items()} == {"a": 9, "b": 6}


def test_slices_are_2d_with_a_3x3_affine(catalog, table) -> None:
    ds = AtlasDataset(table, SliceSampler("coronal", per_volume=2), stores=catalog.stores, seed=1)
    sample = next(iter(ds))
    z, _, x = table.volume(sample["meta"]["volume_index"]).shape
    assert sample["image"].shape == (1, z, x) and "label" not in sample
    assert sample["meta"]["affine"].shape == (3, 3) and len(sample["meta"]["spacing"]) == 2
    start = sample["meta"]["region"].start
    path = table.volume(sample["meta"]["volume_index"]).image_path
    plane = _volume_truth(catalog, sample["meta"]["site"], path)[:, start[1], :]
    assert np.array_equal(sample["image"][0].numpy(), plane)


def _monai_chain():
    from monai.transforms import (
        Compose,
        EnsureTyped,
        RandFlipd,
        RandSpatialCropd,
        ScaleIntensityRanged,
    )

    return Compose(
        [
            ScaleIntensityRanged("image", a_min=-200, a_max=300, b_min=0.0, b_max=1.0, clip=True),
            RandFlipd(["image", "label"], prob=0.5, spatial_axis=2),
            RandSpatialCropd(["image", "label"], roi_size=(4, 8, 8), random_size=False),
            EnsureTyped(["image", "label"], track_meta=False),
        ]
    )


def test_a_monai_dictionary_chain_runs_in_workers_and_is_seeded_per_sample(catalog, table) -> None:
    def batches(workers: int) -> list[dict]:
        ds = AtlasDataset(
            table, PatchSampler(SIZE, per_volume=2, labels=True), stores=catalog.stores,
            seed=5, transform=_monai_chain(),
        )  # fmt: skip
        return list(ds.loader(batch_size=3, num_workers=workers))

    two, zero = batches(2), batches(0)
    assert [b["meta"]["index"].tolist() for b in two] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    for a, b in zip(two, zero, strict=True):
        assert a["image"].shape[1:] == (1, 4, 8, 8) and a["image"].dtype == torch.float32
        assert float(a["image"].min()) >= 0.0 and float(a["image"].max()) <= 1.0
        # augmentation follows (seed, epoch, index): the same whatever the number of workers
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert a["meta"]["site"] == b["meta"]["site"]


def _indices(batches) -> list[int]:
    return [i for b in batches for i in b["meta"]["index"].tolist()]


def test_exact_resume_with_another_number_of_workers(catalog, table) -> None:
    sampler = PatchSampler(SIZE, per_volume=3)

    def dataset() -> AtlasDataset:
        return AtlasDataset(table, sampler, stores=catalog.stores, seed=11)

    ds = dataset()
    ds.set_epoch(2)
    whole = list(ds.loader(batch_size=2, num_workers=0))
    assert sorted(_indices(whole)) == list(range(len(ds)))

    first = dataset()
    first.set_epoch(2)
    loader = first.loader(batch_size=2, num_workers=2)
    head = _take(loader, 3)
    state = loader.state_dict()
    assert state["consumed"] == 6 and state["epoch"] == 2 and state["sampler"]["name"] == "patch"

    resumed = dataset()
    resumed.load_state_dict(state)
    tail = list(resumed.loader(batch_size=4, num_workers=1))
    assert _indices(head) + _indices(tail) == _indices(whole)
    got = torch.cat([b["image"] for b in head + tail])
    assert torch.equal(got, torch.cat([b["image"] for b in whole]))
    assert resumed.state_dict()["consumed"] == len(resumed)
    # the next epoch is another order of other samples
    resumed.set_epoch(3)
    assert _boxes(resumed.loader(batch_size=2)) != _boxes(whole)


def _boxes(batches) -> list[tuple]:
    return [
        (v, r.start, r.stop)
        for b in batches
        for v, r in zip(b["meta"]["volume_index"], b["meta"]["region"], strict=True)
    ]


def test_workers_stay_up_between_epochs_and_follow_set_epoch_and_resume(catalog, table) -> None:
    sampler = PatchSampler(SIZE, per_volume=2)
    reference = AtlasDataset(table, sampler, stores=catalog.stores, seed=4)
    expected = {}
    for e in (1, 2):
        reference.set_epoch(e)
        expected[e] = _boxes(reference.loader(batch_size=2))
    ds = AtlasDataset(table, sampler, stores=catalog.stores, seed=4)
    with ds.loader(batch_size=2, num_workers=2) as loader:
        assert len(_take(loader, 2)) == 2  # epoch 0, left half way
        loader.set_epoch(1)
        assert _boxes(loader) == expected[1]
        loader.set_epoch(2)
        head = _take(loader, 2)
        state = loader.state_dict()
        loader.load_state_dict(state)
        assert _boxes(head) + _boxes(loader) == expected[2]
        assert expected[1] != expected[2]


def test_iterating_again_after_a_whole_epoch_reads_the_next_epoch(catalog, table) -> None:
    sampler = PatchSampler(SIZE, per_volume=2)
    reference = AtlasDataset(table, sampler, stores=catalog.stores, seed=6)
    expected = []
    for e in (0, 1):
        reference.set_epoch(e)
        expected.append(_boxes(reference.loader(batch_size=2)))
    ds = AtlasDataset(table, sampler, stores=catalog.stores, seed=6)
    loader = ds.loader(batch_size=2)
    assert [_boxes(loader), _boxes(loader)] == expected  # no set_epoch between the two
    assert loader.state_dict()["epoch"] == 1 and expected[0] != expected[1]
    # an epoch left part way continues instead
    half = ds.loader(batch_size=2)
    half.set_epoch(0)
    head = _take(half, 1)
    assert _boxes(head) + _boxes(half) == expected[0]


def test_ranks_and_workers_together_read_every_sample_once(catalog, table) -> None:
    sampler = PatchSampler(SIZE, per_volume=3)
    seen: list[int] = []
    for rank in range(2):
        ds = AtlasDataset(table, sampler, stores=catalog.stores, rank=rank, world_size=2)
        seen += _indices(ds.loader(batch_size=2, num_workers=2))
    assert sorted(seen) == list(range(15))


def test_a_failing_site_is_skipped_and_counted_or_raises_when_strict(catalog, table) -> None:
    broken = open_store(
        catalog.stores["b"].url, site="b", faults=FaultConfig(probability=1.0, pattern="*"),
        retry=RetryPolicy(attempts=2, base_delay=0.001),
    )  # fmt: skip
    stores = {"a": catalog.stores["a"], "b": broken}
    sampler = PatchSampler(SIZE, per_volume=3)
    ds = AtlasDataset(table, sampler, reader=Reader(stores, engine="zarr"), batch_reads=2)
    samples = list(ds.loader(batch_size=2, num_workers=2))
    assert {s for b in samples for s in b["meta"]["site"]} == {"a"}
    report = ds.report()
    assert report.sites["a"].read == 9 and report.sites["a"].errors == 0
    assert report.sites["b"].read == 0 and report.sites["b"].skipped == 6
    assert report.sites["b"].errors >= 1 and report.failed_sites == ["b"]
    strict = AtlasDataset(
        table, sampler, reader=Reader(stores, engine="zarr"), batch_reads=2, strict=True
    )
    with pytest.raises(StoreUnavailable):
        list(strict)


def test_bad_input_is_refused_before_any_worker_starts(catalog, atlas, table) -> None:
    research = open_atlas(catalog.stores, purpose="research")
    with pytest.raises(InvalidInput, match="ai-training"):
        AtlasDataset(research, PatchSampler(SIZE))
    with pytest.raises(InvalidInput, match="no-such-label"):
        AtlasDataset(atlas, BalancedSampler(SIZE, labels=("no-such-label",)), subset=None)
    with pytest.raises(InvalidInput, match="larger than"):
        AtlasDataset(table, PatchSampler((999, 16, 16), pad=False), stores=catalog.stores)
    with pytest.raises(NotFound, match="site"):
        AtlasDataset(table, PatchSampler(SIZE), stores={"a": catalog.stores["a"]})
    with pytest.raises(InvalidInput, match="reader= or stores="):
        AtlasDataset(table, PatchSampler(SIZE))
    with pytest.raises(InvalidInput, match="batch_reads"):
        AtlasDataset(table, PatchSampler(SIZE), stores=catalog.stores, batch_reads=0)
    with pytest.raises(InvalidInput, match="VolumeTable"):
        AtlasDataset("not a catalog", PatchSampler(SIZE))
    ds = AtlasDataset(table, PatchSampler(SIZE), stores=catalog.stores)
    other = AtlasDataset(table, PatchSampler((4, 4, 4)), stores=catalog.stores)
    with pytest.raises(InvalidInput, match="another sampler"):
        ds.load_state_dict(other.state_dict())
    with pytest.raises(InvalidInput, match="not a StreamLoader option"):
        ds.loader(batch_size=2, shuffle=True)


def test_grid_predictions_stitch_back_into_each_volume_with_its_affine(catalog, table) -> None:
    reader = Reader(catalog.stores)
    ds = AtlasDataset(table, GridSampler((8, 16, 16), overlap=0.5), reader=reader)
    stitched = {
        v: GridAggregator.for_image(reader.info(table.volume(v).ref())) for v in range(len(table))
    }
    for batch in ds.loader(batch_size=4):
        meta = batch["meta"]
        for i, v in enumerate(meta["volume_index"]):  # an identity "model"
            stitched[v].add(meta["region"][i], batch["image"][i].float())
    for v, aggregator in stitched.items():
        volume = table.volume(v)
        out = aggregator.result()
        image = open_image(catalog.stores[volume.site], volume.image_path)
        assert out.complete
        assert np.array_equal(out.data[0], image.read(0).astype(np.float32))
        assert np.allclose(out.affine, image.metadata.affine)
