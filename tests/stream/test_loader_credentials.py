"""Workers started from a forkserver read a site whose credentials were set after it started."""

from __future__ import annotations

import multiprocessing.forkserver
import pickle

import numpy as np
import pytest
from tests.stores import s3_store
from tests.stream.plan_catalog import build_catalog

from atlas.index.catalog import open_atlas
from atlas.read import Reader, ReadRequest
from atlas.stream import AtlasDataset, PatchSampler, plan_epochs
from atlas.stream.loader import StreamLoader, WorkerEnvironment, worker_context

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_forkserver_workers_get_the_site_credentials(tmp_path, seaweed) -> None:
    ctx = worker_context()
    multiprocessing.forkserver.ensure_running()  # its environment is fixed from here on
    catalog = build_catalog(tmp_path, {"a": 1, "b": 1})
    table = plan_epochs(open_atlas(catalog.stores, purpose="ai-training"), subset=None)
    remote_b = s3_store(seaweed, site="b")  # sets new credential variables, after the server
    for key in catalog.stores["b"].list(""):
        remote_b.write_bytes(key, catalog.stores["b"].read_bytes(key))
    stores = {"a": catalog.stores["a"], "b": remote_b}
    ds = AtlasDataset(
        table, PatchSampler((8, 16, 16), per_volume=3), reader=Reader(stores, engine="zarr"),
        batch_reads=2, prefetch_bytes=0, seed=5,
    )  # fmt: skip
    loader = StreamLoader(ds, batch_size=2, num_workers=2, multiprocessing_context=ctx)
    with loader:
        batches = list(loader)
    meta = {k: [v for b in batches for v in b["meta"][k]] for k in ("volume_index", "region")}
    volumes = [table.volume(i) for i in meta["volume_index"]]
    assert sorted(v.site for v in volumes) == ["a"] * 3 + ["b"] * 3
    check = Reader(stores, engine="zarr")
    images = [image for batch in batches for image in batch["image"]]
    wanted = check.read_many(
        [ReadRequest(v.ref(), r) for v, r in zip(volumes, meta["region"], strict=True)]
    )
    for image, want in zip(images, wanted, strict=True):
        np.testing.assert_array_equal(image.numpy().reshape(want.data.shape), want.data)


def test_worker_environment_never_shows_its_values() -> None:
    calls: list[int] = []
    env = WorkerEnvironment({"ATLAS_X_KEY": "s3cr3t-value"}, calls.append)
    assert "s3cr3t-value" not in repr(env) and "ATLAS_X_KEY" in repr(env)
    assert pickle.loads(pickle.dumps(env))._values == {"ATLAS_X_KEY": "s3cr3t-value"}
