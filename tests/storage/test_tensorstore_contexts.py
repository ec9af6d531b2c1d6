"""A store's child tensorstore context: its own resources, the rest from a shared parent."""

from __future__ import annotations

import numpy as np
import tensorstore as ts
import zarr

from atlas.storage import open_store


def test_child_contexts_share_the_parent_cache_and_keep_their_own_settings(tmp_path) -> None:
    store = open_store(tmp_path / "s", site="s")
    arr = zarr.create_array(store.zarr_store(), name="a", shape=(4, 4), dtype="int16")
    arr[:] = np.arange(16, dtype="int16").reshape(4, 4)
    parent = ts.Context({"cache_pool": {"total_bytes_limit": 1 << 20}})
    one = store.tensorstore_context(parent=parent, resources={"file_io_concurrency": {"limit": 3}})
    two = store.tensorstore_context(parent=parent)
    assert one is not two and one is not store.tensorstore_context()
    assert one.parent is parent and two.parent is parent
    assert one["cache_pool"] == parent["cache_pool"] == two["cache_pool"]
    assert one["file_io_concurrency"].to_json() == {"limit": 3}
    assert store.tensorstore_context() is store.tensorstore_context()  # the cached own one
    spec = {"driver": "zarr3", "kvstore": store.kvstore_spec("a")}
    data = store.open_tensorstore(spec, context=one, read=True, open=True).read().result()
    np.testing.assert_array_equal(data, arr[:])
    kv = store.open_kvstore("a", context=two)
    assert kv.read("zarr.json").result().value.startswith(b"{")
