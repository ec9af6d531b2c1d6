"""Raw Zarr over HTTP from an S3 site (SeaweedFS): the same answers as from a local store."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tensorstore as ts
import zarr
from tests.serve.rawzarr_support import Live, serve_catalog
from tests.stores import s3_store
from tests.stream.plan_catalog import build_catalog

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def live_s3(tmp_path_factory, seaweed) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("rawzarr-s3")
    catalog = build_catalog(tmp, {"a": 1})
    local = catalog.stores["a"]
    remote = s3_store(seaweed, site="a")
    for key in local.list():  # the site, index included, as it would be published on S3
        remote.write_bytes(key, local.read_bytes(key))
    (image,) = catalog.site_of
    yield from serve_catalog({"a": remote}, {"a": image, "b": ""}, tmp)
    remote.close()


def test_an_s3_site_serves_ranges_etags_and_arrays(live_s3: Live) -> None:
    img = live_s3.image["a"]
    store = live_s3.ctx.stores["a"]
    key = f"{img}/0/c/0/0/0"
    data = store.read_bytes(key)
    whole = live_s3.get(f"/zarr/a/{key}")
    assert whole.status_code == 200 and whole.content == data
    etag = whole.headers["etag"]
    assert live_s3.get(f"/zarr/a/{key}", **{"If-None-Match": etag}).status_code == 304
    part = live_s3.get(f"/zarr/a/{key}", Range="bytes=-20")
    assert part.status_code == 206 and part.content == data[-20:]
    assert part.headers["content-range"] == f"bytes {len(data) - 20}-{len(data) - 1}/{len(data)}"
    assert live_s3.get("/zarr/a/_index/CURRENT").status_code == 404
    local = zarr.open_array(store.zarr_store(), path=f"{img}/0", mode="r")[:]
    spec = {"driver": "zarr3", "kvstore": {"driver": "http",
            "base_url": f"{live_s3.base}/signed/tok-a/a/{img}/0/"}}  # fmt: skip
    np.testing.assert_array_equal(ts.open(spec).result().read().result(), local)
    store.write_bytes(key, data)  # rewritten (same bytes, a new object): the ETag stays valid
    assert live_s3.get(f"/zarr/a/{key}").headers["etag"] == etag  # S3 ETag is the content MD5
