"""A SeaweedFS site killed in the middle of an epoch: its samples are skipped and counted."""

from __future__ import annotations

import pytest
from tests.stores import s3_store
from tests.stream.plan_catalog import build_catalog

from atlas.errors import NotFound
from atlas.index.catalog import open_atlas
from atlas.read import Reader
from atlas.storage import RetryPolicy
from atlas.stream import AtlasDataset, PatchSampler, plan_epochs
from atlas.testing.seaweed import SeaweedS3, find_weed

pytestmark = [pytest.mark.s3, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A SeaweedFS server of this module alone: the test kills it."""
    try:
        find_weed()
    except NotFound as exc:
        pytest.skip(str(exc))
    s = SeaweedS3(tmp_path_factory.mktemp("seaweed-killed"), buckets=["atlas"], name="site-b")
    s.start()
    yield s
    s.stop()


def test_a_site_killed_mid_epoch_is_skipped_and_counted(tmp_path, server) -> None:
    catalog = build_catalog(tmp_path, {"a": 1, "b": 1})
    table = plan_epochs(open_atlas(catalog.stores, purpose="ai-training"), subset=None)
    local_b = catalog.stores["b"]
    remote_b = s3_store(server, site="b", retry=RetryPolicy(attempts=2, base_delay=0.01))
    for key in local_b.list(""):  # site b's images, now served by SeaweedFS
        remote_b.write_bytes(key, local_b.read_bytes(key))
    stores = {"a": catalog.stores["a"], "b": remote_b}
    ds = AtlasDataset(
        table, PatchSampler((8, 16, 16), per_volume=4), reader=Reader(stores, engine="zarr"),
        batch_reads=1, prefetch_bytes=0, seed=2,
    )  # fmt: skip
    assert len(ds) == 8
    seen: list[str] = []
    for sample in ds:
        seen.append(sample["meta"]["site"])
        if len(seen) == 2:
            server.kill()  # the site dies: no answer any more, connections refused
    report = ds.report()
    assert report.sites["a"].read == 4 and report.sites["a"].errors == 0
    b = report.sites["b"]
    assert b.errors >= 1 and b.skipped >= 1 and b.read + b.skipped == 4
    assert seen.count("a") == 4 and seen.count("b") == b.read
    assert report.failed_sites == ["b"]
