"""What makes a DataLoader worker start fast, and a batch cheap, without changing what it reads.

- the training process opens the epoch's first images once (:meth:`AtlasDataset.open_for_workers`)
  and their metadata travels with the dataset: workers read pixels only (tested by erasing the
  images' group metadata after opening: workers still read every sample, a fresh reader cannot);
- the planned epoch travels too (no worker plans it again);
- read batches start at one loader batch and double up to ``batch_reads``;
- batches are copied into one buffer per tensor (not ``torch.stack``), with the same values.
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from tests.stream.plan_catalog import build_catalog

from atlas.errors import InvalidInput, NotFound
from atlas.index.catalog import open_atlas
from atlas.read import ImageRef, Reader
from atlas.storage import open_store
from atlas.stream import AtlasDataset, PatchSampler, plan_epochs
from atlas.stream.collate import batch_buffer, collate_samples
from atlas.stream.dataset import _read_chunks

SIZE = (8, 16, 16)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("stream-start"), {"a": 2, "b": 1})


@pytest.fixture(scope="module")
def table(catalog):
    return plan_epochs(open_atlas(catalog.stores, purpose="ai-training"), subset=None)


def _copy_sites(catalog, root) -> dict:
    stores = {}
    for site, store in catalog.stores.items():
        target = root / site
        shutil.copytree(store.fs_path(""), target)
        stores[site] = open_store(target, site=site)
    return stores


def _erase_group_metadata(store, table) -> int:
    """Delete each image's and label image's group zarr.json (the arrays' own stay)."""
    erased = 0
    for key in store.list(""):
        parts = key.split("/")
        if parts[-1] != "zarr.json":
            continue
        doc = store.read_bytes(key)
        if b'"node_type": "group"' in doc or b'"node_type":"group"' in doc:
            store.delete(key)
            erased += 1
    return erased


def _boxes_and_crcs(batches) -> list[tuple]:
    out = []
    for b in batches:
        for i, region in enumerate(b["meta"]["region"]):
            out.append(
                (
                    int(b["meta"]["volume_index"][i]),
                    tuple(region.start),
                    b["image"][i].numpy().tobytes(),
                    b["label"][i].numpy().tobytes(),
                )
            )
    return out


def test_workers_read_with_the_metadata_opened_for_them(catalog, table, tmp_path) -> None:
    sampler = PatchSampler(SIZE, per_volume=3, labels=True)
    reference = _boxes_and_crcs(
        AtlasDataset(table, sampler, stores=catalog.stores, seed=5).loader(batch_size=2)
    )
    stores = _copy_sites(catalog, tmp_path)
    ds = AtlasDataset(table, sampler, stores=stores, seed=5)
    opened = ds.open_for_workers()
    assert opened == 2 * len(table)  # each image and its label image
    assert sum(_erase_group_metadata(s, table) for s in stores.values()) >= opened
    with ds.loader(batch_size=2, num_workers=2) as loader:
        got = _boxes_and_crcs(loader)
    assert got == reference  # every sample, in order, the same voxels
    assert ds.report().read == len(reference) and ds.report().skipped == 0
    # without the metadata sent, a reader of the damaged copy cannot open the images
    with pytest.raises(NotFound):
        Reader(stores).info(ImageRef(table.volume(0).site, table.volume(0).image_path))


def test_the_planned_epoch_travels_with_the_dataset(catalog, table) -> None:
    ds = AtlasDataset(table, PatchSampler(SIZE, per_volume=2), stores=catalog.stores, seed=1)
    ds.set_epoch(3)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._epoch is not None and copy._epoch.epoch == 3
    positions = np.arange(len(ds))
    assert [s.region for s in copy._epoch.specs(positions)] == [
        s.region for s in ds._plan(3).specs(positions)
    ]


def test_read_batches_start_small_and_double() -> None:
    sizes = [c.size for c in _read_chunks(np.arange(70), 8, 32)]
    assert sizes == [8, 16, 32, 14]
    assert np.concatenate(_read_chunks(np.arange(70), 8, 32)).tolist() == list(range(70))
    assert [c.size for c in _read_chunks(np.arange(5), 8, 2)] == [2, 2, 1]
    assert _read_chunks(np.arange(0), 8, 32) == []


def test_collate_copies_into_one_new_buffer() -> None:
    images = [torch.full((1, 2, 3), i, dtype=torch.int16) for i in range(3)]
    labels = [np.full((1, 2, 3), i, dtype=np.uint8) for i in range(3)]
    batch = collate_samples(
        [{"image": im, "label": lab, "meta": {"index": i}} for i, (im, lab) in
         enumerate(zip(images, labels, strict=True))], pin=True,
    )  # fmt: skip
    assert torch.equal(batch["image"], torch.stack(images))
    assert batch["label"].dtype == torch.uint8 and batch["label"][2].max() == 2
    batch["image"][0] += 7  # a new buffer: the samples are untouched
    assert images[0].max() == 0
    assert batch["image"].is_pinned() == torch.cuda.is_available()
    # what numpy cannot copy (bfloat16), or a tensor subclass, goes through torch.stack
    halves = [torch.ones(2, dtype=torch.bfloat16) * i for i in range(2)]
    assert collate_samples([{"x": h} for h in halves])["x"].dtype == torch.bfloat16

    class Tagged(torch.Tensor):
        pass

    tagged = [torch.zeros(2).as_subclass(Tagged) for _ in range(2)]
    assert type(collate_samples([{"x": t} for t in tagged])["x"]) is Tagged
    assert batch_buffer((2, 3), torch.float32).shape == (2, 3)


def test_opened_images_pass_between_readers_and_bad_ones_are_refused(catalog, table) -> None:
    reader = Reader(catalog.stores)
    ref = ImageRef(table.volume(0).site, table.volume(0).image_path)
    info = reader.info(ref)
    opened = pickle.loads(pickle.dumps(reader.opened()))
    assert set(opened) == {ref}
    other = Reader(catalog.stores)
    other.add_opened(opened)
    assert other.info(ref).shape == info.shape and other.opened().keys() == {ref}
    with pytest.raises(InvalidInput, match="add_opened"):
        other.add_opened({ref: "not an image"})
    with pytest.raises(NotFound, match="unknown site"):
        other.add_opened({ImageRef("nowhere", ref.path): opened[ref]})
