"""Every dtype, every pyramid level and the labels, read by zarr-python and tensorstore on
local, memory and S3 stores, without Atlas's reader.

The expected values never come from Atlas's reader either: level 0 is the array written,
level ``i`` is the numpy reference of the 2x downsampling (mean for images, mode for labels)
applied to level ``i - 1``.

How each store is opened by the other tools:

- local: zarr-python on the folder path; tensorstore with a ``file`` kvstore.
- S3 (SeaweedFS): zarr-python through fsspec/s3fs with the credentials passed as storage
  options; tensorstore with a hand-written ``s3`` kvstore spec (endpoint, region, credentials
  from the ``AWS_*`` variables of this test).
- memory: zarr-python through Atlas's zarr store (``Store.zarr_store()``: a ``memory://``
  store lives in this Python process, so no other path reaches it). tensorstore cannot open
  it: its kvstores are C++ and cannot see a Python fsspec file system. Instead every object of
  the image is copied byte for byte into a tensorstore ``memory`` kvstore, which tensorstore
  then opens: it reads exactly the bytes the memory store holds.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import zarr
from tests.stores import make_store

from atlas.kernels import downsample_mean, downsample_mode
from atlas.ome import LabelSpec, Layout, write_image
from atlas.storage import Store

DTYPES = ["int16", "uint16", "uint8", "float32"]
KINDS = ["local", "memory", "s3"]
LAYOUT = Layout(chunks=(8, 32, 32), shards=(16, 64, 64))
SHAPE = (18, 70, 90)
PATH = "c/s.ome.zarr"


def _volume(dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.startswith("float"):
        return rng.uniform(-1e6, 1e6, size=SHAPE).astype(dtype)
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, size=SHAPE, endpoint=True).astype(dtype)
    data.flat[0], data.flat[-1] = info.min, info.max
    return data


def _labels() -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[4:14, 20:50, 30:70] = 1
    lab[6:10, 25:40, 35:50] = 2
    return lab


def _expected_levels(data: np.ndarray, factors: list[tuple[int, ...]], mode: bool) -> list:
    """Level 0 and each downsampled level from the numpy reference kernels."""
    down = downsample_mode if mode else downsample_mean
    out = [data]
    for prev_f, f in itertools.pairwise(factors):
        step = tuple(b // a for a, b in zip(prev_f, f, strict=True))
        out.append(down(out[-1], step, backend="numpy"))
    return out


def _s3_parts(store: Store, server: Any) -> tuple[str, str, dict[str, Any]]:
    loc = store.location
    creds = server.admin
    options = {
        "key": creds.access_key,
        "secret": creds.secret_key,
        "client_kwargs": {"endpoint_url": server.endpoint_url, "region_name": "us-east-1"},
    }
    return loc.bucket, loc.prefix.strip("/"), options


def _zarr_group(kind: str, store: Store, server: Any) -> zarr.Group:
    if kind == "local":
        return zarr.open_group(f"{store.location.root}/{PATH}", mode="r")
    if kind == "memory":
        return zarr.open_group(store.zarr_store(), path=PATH, mode="r")
    bucket, prefix, options = _s3_parts(store, server)
    return zarr.open_group(f"s3://{bucket}/{prefix}/{PATH}", mode="r", storage_options=options)


def _tensorstore_opener(kind: str, store: Store, server: Any, monkeypatch):
    """A function ``array path -> tensorstore array`` for this kind of store."""
    import tensorstore as ts

    context = ts.Context()
    if kind == "local":
        root = f"{store.location.root}/{PATH}"

        def kv(sub: str) -> dict[str, Any]:
            return {"driver": "file", "path": f"{root}/{sub}/"}

    elif kind == "memory":
        memory = ts.KvStore.open({"driver": "memory"}, context=context).result()
        keys = store.list(PATH + "/")
        assert keys
        for key in keys:
            memory.write(key, store.read_bytes(key)).result()

        def kv(sub: str) -> dict[str, Any]:
            return {"driver": "memory", "path": f"{PATH}/{sub}/"}

    else:
        bucket, prefix, options = _s3_parts(store, server)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])

        def kv(sub: str) -> dict[str, Any]:
            return {
                "driver": "s3",
                "bucket": bucket,
                "path": f"{prefix}/{PATH}/{sub}/",
                "endpoint": server.endpoint_url,
                "aws_region": "us-east-1",
                "aws_credentials": {"type": "environment"},
            }

    def open_array(sub: str) -> Any:
        return ts.open({"driver": "zarr3", "kvstore": kv(sub)}, context=context, open=True).result()

    return open_array


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_other_readers_every_dtype_level_and_label(kind, dtype, request, tmp_path, monkeypatch):
    store = make_store(kind, request, tmp_path)
    server = request.getfixturevalue("seaweed") if kind == "s3" else None
    data, lab = _volume(dtype), _labels()
    written = write_image(
        store, PATH, data, spacing=(2.0, 0.5, 0.5), layout=LAYOUT, pyramid_target=32,
        labels={"seg": LabelSpec(lab, names={1: "organ", 2: "lesion"})},
    )  # fmt: skip
    levels = written.metadata.levels
    assert len(levels) >= 3, "the test needs a pyramid"
    factors = [tuple(lv.factors) for lv in levels]
    image_truth = _expected_levels(data, factors, mode=False)
    label_truth = _expected_levels(lab, factors, mode=True)
    assert [t.shape for t in image_truth] == [tuple(lv.shape) for lv in levels]

    group = _zarr_group(kind, store, server)
    open_ts = _tensorstore_opener(kind, store, server, monkeypatch)
    label_paths = [f"labels/seg/{lv.path}" for lv in levels]
    for i, lv in enumerate(levels):
        for sub, truth in ((lv.path, image_truth[i]), (label_paths[i], label_truth[i])):
            by_zarr = group[sub]
            assert by_zarr.dtype == truth.dtype, (kind, sub)
            np.testing.assert_array_equal(by_zarr[:], truth, err_msg=f"zarr-python {kind} {sub}")
            by_ts = open_ts(sub)
            assert by_ts.dtype.numpy_dtype == truth.dtype, (kind, sub)
            np.testing.assert_array_equal(
                by_ts.read().result(), truth, err_msg=f"tensorstore {kind} {sub}"
            )
