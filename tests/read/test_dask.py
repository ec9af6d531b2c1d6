"""to_dask: shard-chunked dask arrays of catalog images, computed on real worker processes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from atlas import records
from atlas.errors import ConfigError, CorruptData, InvalidInput, NotFound
from atlas.index import build_index, open_atlas
from atlas.ome import LabelSpec, Layout, open_image, write_image
from atlas.privacy import consent
from atlas.read import ImageRef, Reader, credential_variables, refs_from_rows, to_dask
from atlas.storage import open_store

LAYOUT = Layout(chunks=(8, 32, 32), shards=(16, 64, 64))
#: volumes per site: their shapes differ, so edge shards are partial and means differ
SHAPES = {"site-a": [(32, 64, 64), (24, 70, 64)], "site-b": [(40, 64, 96), (16, 64, 64)]}


def _volume(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3000, size=shape, dtype=np.int16)


def _add_volume(store, site, collection, n, data):
    """Write one image and its series record, as ingest leaves them for the index build."""
    subject, series = f"subject{site[-1]}{n:03d}", f"2.25.{site[-1] == 'a'}{n:04d}9"
    path = f"{collection}/{subject}/{series}.ome.zarr"
    write_image(store, path, data, spacing=(2.0, 0.8, 0.8), layout=LAYOUT, modality="CT")
    base = {"site": site, "collection": collection, "subject_id": subject,
            "study_id": f"2.25.{n}1", "series_id": series, "volume": 0}  # fmt: skip
    row = {
        **base, "image_store": store.url, "image_path": path, "modality": "CT",
        "body_part": "LIVER", "manufacturer": "GE", "model": "synthetic", "sex": "F",
        "age_years": 50.0, "acquisition_date": "20200115", "slice_thickness": 2.0,
        "spacing_z": 2.0, "spacing_y": 0.8, "spacing_x": 0.8, "size_z": data.shape[0],
        "size_y": data.shape[1], "size_x": data.shape[2], "channels": 1, "dtype": "int16",
        "regularly_spaced": True, "levels": 1, "labels": [], "source_format": "DICOM",
    }  # fmt: skip
    records.write_table(store, "series", collection, series, [row])
    records.write_table(store, "images", collection, series, [])
    records.write_table(store, "annotations", collection, series, [])
    return path


@pytest.fixture(scope="module")
def sites(seaweed_sites):
    """Two SeaweedFS sites with their own keys, each with an index of its volumes."""
    from tests.stores import s3_store

    stores, truth = {}, {}
    for server in seaweed_sites[:2]:
        store = s3_store(server, site=server.name)
        for n, shape in enumerate(SHAPES[server.name]):
            data = _volume(shape, seed=len(truth))
            truth[(server.name, _add_volume(store, server.name, "liver-ct", n, data))] = data
        consent.set_collection_default(store, "liver-ct", ["ai-training"])
        build_index(store)
        stores[server.name] = store
    return stores, truth


@pytest.fixture(scope="module")
def client(sites):
    """Two worker processes that get the sites' keys the way any deployment gives them: in
    their environment, under the variable names the store locations carry."""
    from distributed import Client, LocalCluster

    stores, _ = sites
    env = {name: os.environ[name] for name in credential_variables(stores.values())}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
    )
    with cluster, Client(cluster) as c:
        yield c


def _secrets(stores):
    return [os.environ[s.location.secret_env].encode() for s in stores.values()]


def test_chunks_follow_shards_and_values_match(tmp_path) -> None:
    store = open_store(tmp_path / "site", site="local")
    data = _volume((40, 72, 64), seed=1)
    mask = (data > 1000).astype(np.uint8)
    write_image(store, "ct/a.ome.zarr", data, spacing=(1, 1, 1), layout=LAYOUT, pyramid_target=32,
                labels={"tumour": LabelSpec(mask, names={1: "tumour"})})  # fmt: skip
    refs = [ImageRef("local", "ct/a.ome.zarr"), ImageRef("local", "ct/a.ome.zarr", "tumour")]
    image, label = to_dask({"local": store}, refs)
    assert image.chunks == ((16, 16, 8), (64, 8), (64,))  # shards, not the 8x32x32 chunks
    assert image.dtype == np.int16 and label.dtype == np.uint8
    # one task per shard plus the source: nothing per inner chunk
    assert len(dict(image.__dask_graph__())) == image.npartitions + 1 == 7
    np.testing.assert_array_equal(image.compute(scheduler="threads"), data)
    np.testing.assert_array_equal(label.compute(scheduler="sync"), mask)
    # a sub-region computes only the shards it touches
    part = image[20:30, 60:70]
    assert part.npartitions == 2
    np.testing.assert_array_equal(part.compute(), data[20:30, 60:70])
    # the same image gives the same graph keys (dask can share work between arrays)
    again = to_dask({"local": store}, refs[:1])[0]
    assert again.name == image.name != label.name
    # a reader of either engine gives the same arrays; level 1 has its own shards
    for engine in ("zarr", "tensorstore"):
        img, lab = to_dask(Reader({"local": store}, engine=engine), refs, level=1)
        assert img.shape == (20, 36, 32) and img.chunks == ((16, 4), (36,), (32,))
        np.testing.assert_array_equal(img.compute(), open_image(store, "ct/a.ome.zarr").read(1))
        assert lab.shape == img.shape and lab.dtype == np.uint8


@pytest.mark.s3
def test_reduction_over_two_sites_on_worker_processes(sites, client) -> None:
    import cloudpickle
    import dask
    from distributed import get_task_stream

    stores, truth = sites
    atlas = open_atlas(stores, purpose="ai-training", strict=True)
    refs = refs_from_rows(atlas.series.where('modality == "CT"'))
    assert sorted((r.site, r.path) for r in refs) == sorted(truth)
    arrays = to_dask(stores, refs)
    for blob in (cloudpickle.dumps(arrays), pickle.dumps(arrays),
                 cloudpickle.dumps([dict(a.__dask_graph__()) for a in arrays])):  # fmt: skip
        for secret in _secrets(stores):
            assert secret not in blob
    means = [a.mean(dtype="float64") for a in arrays]
    total = sum(a.sum(dtype="int64") for a in arrays)
    with get_task_stream(client) as stream:
        got_means, got_total = dask.compute(means, total, scheduler=client)
    expected = [truth[(r.site, r.path)] for r in refs]
    np.testing.assert_allclose(got_means, [v.mean(dtype="float64") for v in expected])
    assert got_total == sum(int(v.sum(dtype="int64")) for v in expected)
    # the shard reads ran in the worker processes, one task per shard
    reads = [t for t in stream.data if t["key"][0].startswith("atlas-")]
    workers = set(client.scheduler_info()["workers"])
    assert {t["worker"] for t in reads} <= workers and reads
    assert len({t["key"] for t in reads}) >= sum(a.npartitions for a in arrays)


@pytest.mark.s3
def test_workers_read_keys_from_their_own_environment(sites, client, seaweed_sites) -> None:
    from tests.stores import s3_store

    stores, truth = sites
    (site, path), data = next(iter(truth.items()))
    # the same site under variable names the workers' environment does not have
    late = s3_store(seaweed_sites[0], site=site, prefix=stores[site].location.prefix)
    missing = credential_variables([late])
    assert set(missing).isdisjoint(credential_variables(stores.values()))
    (arr,) = to_dask({site: late}, [ImageRef(site, path)])  # the client has them: opens
    with pytest.raises(ConfigError, match=missing[0]):
        arr.sum().compute(scheduler=client)
    # the named variables of the cluster's sites are enough
    (arr,) = to_dask(stores, [ImageRef(site, path)])
    assert int(arr.sum(dtype="int64").compute(scheduler=client)) == int(data.sum(dtype="int64"))


@pytest.mark.s3
def test_corrupt_chunk_on_a_worker_reaches_the_client(sites, client) -> None:
    stores, _ = sites
    store = stores["site-b"]
    data = _volume((32, 64, 64), seed=99)
    write_image(store, "damaged/v.ome.zarr", data, spacing=(1, 1, 1), overwrite=True,
                layout=Layout(chunks=(8, 32, 32), shards=(16, 64, 64), codec="none"))  # fmt: skip
    key = "damaged/v.ome.zarr/0/c/1/0/0"
    raw = bytearray(store.read_bytes(key))
    raw[1000] ^= 0xFF  # inside the first inner chunk of the second shard
    store.write_bytes(key, bytes(raw))
    (arr,) = to_dask(stores, [ImageRef("site-b", "damaged/v.ome.zarr")])
    with pytest.raises(CorruptData, match=r"'damaged/v\.ome\.zarr' level 0: chunk \(2, 0, 0\)"):
        arr.sum().compute(scheduler=client)
    # the undamaged shard still computes
    assert int(arr[:16].sum(dtype="int64").compute(scheduler=client)) == int(
        data[:16].sum(dtype="int64")
    )


def test_bad_input_fails_before_any_pixel_is_read(tmp_path) -> None:
    store = open_store(tmp_path / "site", site="local")
    write_image(store, "ct/a.ome.zarr", _volume((8, 32, 32), 0), spacing=(1, 1, 1))
    stores = {"local": store}
    with pytest.raises(NotFound, match=r"unknown site 'elsewhere'; this reader has \['local'\]"):
        to_dask(stores, [ImageRef("elsewhere", "ct/a.ome.zarr")])
    with pytest.raises(InvalidInput, match=r"local:ct/a\.ome\.zarr has levels 0\.\.0, not 3"):
        to_dask(stores, [ImageRef("local", "ct/a.ome.zarr")], level=3)
    with pytest.raises(NotFound, match=r"no image at 'ct/none\.ome\.zarr'"):
        to_dask(stores, [ImageRef("local", "ct/none.ome.zarr")])
    with pytest.raises(NotFound, match="no label 'organs'"):
        to_dask(stores, [ImageRef("local", "ct/a.ome.zarr", "organs")])
    with pytest.raises(InvalidInput, match="ImageRef values"):
        to_dask(stores, ["local:ct/a.ome.zarr"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match=r"missing \['image_path'\]"):
        import pyarrow as pa

        refs_from_rows(pa.table({"site": ["local"]}))
    with pytest.raises(InvalidInput, match="'site' and 'image_path'"):
        refs_from_rows([{"site": "local"}])


def test_refs_from_rows_takes_every_result_shape() -> None:
    import pyarrow as pa

    rows = [{"site": "a", "image_path": "x/1.ome.zarr", "z_index": z} for z in range(3)]
    rows.append({"site": "b", "image_path": "x/1.ome.zarr", "z_index": 0})
    expected = [ImageRef("a", "x/1.ome.zarr", "seg"), ImageRef("b", "x/1.ome.zarr", "seg")]
    assert refs_from_rows(rows, label="seg") == expected  # one ref per volume, in order
    assert refs_from_rows(pa.Table.from_pylist(rows), label="seg") == expected
    assert refs_from_rows([]) == []
