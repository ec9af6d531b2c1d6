"""OME-Zarr v0.5 writer/reader: exact round trips, other tools, pyramids, metadata, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from atlas.errors import AlreadyExists, CorruptData, IncompleteImage, InvalidInput, NotFound
from atlas.kernels import downsample_mean, downsample_mode
from atlas.ome import LabelSpec, Layout, find_incomplete, open_image, write_image
from atlas.storage import FaultConfig, RetryPolicy, Store, open_store

DTYPES = ["int16", "uint16", "uint8", "float32"]


def _volume(dtype: str, shape=(20, 70, 90), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype) if dtype.startswith("float") else np.iinfo(dtype)
    lo, hi = (-1e6, 1e6) if dtype.startswith("float") else (info.min, info.max)
    data = rng.uniform(lo, hi, size=shape).astype(dtype)
    data.flat[0], data.flat[-1] = (lo, hi) if not dtype.startswith("float") else (0.0, -0.0)
    return data


def _labels(shape=(20, 70, 90)) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[5:15, 20:40, 30:60] = 1
    lab[8:10, 25:30, 35:40] = 2
    return lab


LAYOUT = Layout(chunks=(8, 32, 32), shards=(16, 64, 64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_exact_on_every_store(any_store: Store, dtype: str) -> None:
    data = _volume(dtype)
    image = write_image(
        any_store, "c/s.ome.zarr", data, spacing=(2.0, 0.5, 0.5), layout=LAYOUT, pyramid_target=32
    )
    np.testing.assert_array_equal(image.read(0), data)
    again = open_image(any_store, "c/s.ome.zarr")
    assert again.metadata.dtype == dtype
    assert again.metadata.shape == data.shape
    np.testing.assert_array_equal(again.array(0)[:], data)
    np.testing.assert_array_equal(np.asarray(again.dask(0)), data)


def test_pyramid_levels_match_reference_kernels(tmp_path) -> None:
    data = _volume("int16", shape=(9, 130, 70))
    lab = np.zeros(data.shape, np.uint16)
    lab[2:7, 10:90, 5:50] = 3
    image = write_image(
        open_store(tmp_path),
        "p.ome.zarr",
        data,
        spacing=(0.6, 0.5, 0.5),  # nearly isotropic: z halves too
        labels={"mask": LabelSpec(lab, names={3: "tumour"})},
        layout=LAYOUT,
        pyramid_target=32,
    )
    levels = image.metadata.levels
    assert [lv.shape for lv in levels] == [(9, 130, 70), (5, 65, 35), (3, 33, 18), (2, 17, 9)]
    prev = data
    for i in range(1, len(levels)):
        expected = downsample_mean(prev, (2, 2, 2), backend="numpy")
        np.testing.assert_array_equal(image.read(i), expected)
        prev = expected
    label = image.label("mask")
    assert len(label.levels) == len(levels)
    prev_l = lab
    for i in range(1, len(levels)):
        expected_l = downsample_mode(prev_l, (2, 2, 2), backend="numpy")
        np.testing.assert_array_equal(label.read(i), expected_l)
        prev_l = expected_l


def test_thick_slices_keep_z_until_isotropic(tmp_path) -> None:
    image = write_image(
        open_store(tmp_path), "t.ome.zarr", np.zeros((10, 1100, 1100), "int16"),
        spacing=(2.5, 0.7, 0.7), layout=Layout(chunks=(8, 128, 128), shards=(8, 512, 512)),
    )  # fmt: skip
    meta = image.metadata
    assert [lv.shape for lv in meta.levels] == [
        (10, 1100, 1100), (10, 550, 550), (10, 275, 275), (5, 138, 138)
    ]  # fmt: skip
    assert meta.levels[3].scale == pytest.approx((5.0, 5.6, 5.6))


def test_metadata_transforms_and_affine(tmp_path) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    # oblique: array x and y rotated in the patient's axial plane; z along S
    direction = np.array([[0.0, -s, c], [0.0, c, s], [1.0, 0.0, 0.0]])
    origin = (-120.0, 35.5, 410.25)
    image = write_image(
        open_store(tmp_path), "o.ome.zarr", np.ones((4, 64, 64), "int16"),
        spacing=(3.0, 0.8, 0.6), origin=origin, direction=direction, modality="CT",
        layout=LAYOUT, pyramid_target=32,
    )  # fmt: skip
    meta = image.metadata
    assert meta.spacing == (3.0, 0.8, 0.6)
    assert meta.origin == origin
    np.testing.assert_allclose(meta.direction, direction)
    idx = np.array([2.0, 10.0, 7.0, 1.0])
    expected = np.asarray(origin) + direction @ (np.array([3.0, 0.8, 0.6]) * idx[:3])
    np.testing.assert_allclose((meta.affine @ idx)[:3], expected, atol=1e-9)
    lv1 = meta.levels[1]
    assert lv1.scale == pytest.approx((3.0, 1.6, 1.2))
    # level-1 voxel centres sit in the middle of the 2x2 block they average
    assert lv1.translation[1] == pytest.approx(meta.levels[0].translation[1] + 0.4)
    assert [w.name for w in meta.windows] == ["soft tissue", "lung", "bone", "brain"]
    attrs = zarr.open_group(image.store.zarr_store(), path="o.ome.zarr", mode="r").attrs
    window = attrs["ome"]["omero"]["channels"][0]["window"]
    assert (window["start"], window["end"]) == (-160.0, 240.0)


def test_2d_and_multichannel_images(tmp_path) -> None:
    store = open_store(tmp_path)
    plane = _volume("uint8", shape=(300, 500))
    img2 = write_image(store, "x/plane.ome.zarr", plane, spacing=(0.1, 0.1))
    assert img2.metadata.spatial_axes == ("y", "x")
    assert [lv.shape for lv in img2.metadata.levels] == [(300, 500), (150, 250)]
    np.testing.assert_array_equal(img2.read(0), plane)
    rgb = _volume("uint8", shape=(3, 40, 600))
    img3 = write_image(store, "x/rgb.ome.zarr", rgb, spacing=(0.2, 0.2), axes="cyx")
    assert img3.metadata.levels[1].shape == (3, 20, 300)
    np.testing.assert_array_equal(img3.read(0), rgb)
    np.testing.assert_array_equal(img3.read(1)[1], downsample_mean(rgb[1], (2, 2), backend="numpy"))


def test_labels_metadata_and_counts(tmp_path) -> None:
    lab = _labels()
    image = write_image(
        open_store(tmp_path), "l.ome.zarr", _volume("int16"), spacing=(1, 1, 1),
        labels={"seg": LabelSpec(lab, names={1: "liver", 2: "liver tumour"},
                                 colors={2: (255, 0, 0, 255)},
                                 properties={2: {"code": "SCT:108369006"}})},
        layout=LAYOUT,
    )  # fmt: skip
    assert image.label_names == ("seg",)
    info = image.label("seg").info
    assert info.names == {1: "liver", 2: "liver tumour"}
    assert info.colors[2] == (255, 0, 0, 255)
    assert info.properties[2]["code"] == "SCT:108369006"
    assert info.voxel_counts == {1: int((lab == 1).sum()), 2: int((lab == 2).sum())}
    np.testing.assert_array_equal(image.label("seg").read(0), lab)
    with pytest.raises(NotFound, match="has no label 'other'"):
        image.label("other")


class TestOtherTools:
    @pytest.fixture
    def written(self, tmp_path):
        data = _volume("int16", shape=(12, 80, 96))
        store = open_store(tmp_path)
        write_image(
            store, "case/ct.ome.zarr", data, spacing=(2.0, 0.7, 0.7), modality="CT",
            labels={"seg": LabelSpec(_labels((12, 80, 96)), names={1: "liver", 2: "tumour"})},
            layout=LAYOUT, pyramid_target=32,
        )  # fmt: skip
        return store, data, tmp_path / "case" / "ct.ome.zarr"

    def test_zarr_python(self, written) -> None:
        _store, data, path = written
        group = zarr.open_group(str(path), mode="r")
        np.testing.assert_array_equal(group["0"][:], data)
        assert group["0"].metadata.dimension_names == ("z", "y", "x")

    def test_tensorstore(self, written) -> None:
        import tensorstore as ts

        _store, data, path = written
        arr = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "0")}}
        ).result()
        np.testing.assert_array_equal(arr.read().result(), data)

    def test_ome_zarr_models_validates_image_and_labels(self, written) -> None:
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
        from ome_zarr_models.v05.labels import Labels

        _store, _data, path = written
        group = zarr.open_group(str(path), mode="r")
        image = Image.from_zarr(group)
        assert len(image.ome_attributes.multiscales[0].datasets) == 3
        Labels.from_zarr(group["labels"])
        label = ImageLabel.from_zarr(group["labels"]["seg"])
        values = [c.label_value for c in label.ome_attributes.image_label.colors]
        assert values == [1, 2]

    def test_ngff_zarr_and_ome_zarr_py(self, written) -> None:
        import ngff_zarr
        from ome_zarr.io import parse_url as ome_parse_url
        from ome_zarr.reader import Reader

        _store, data, path = written
        ms = ngff_zarr.from_ngff_zarr(str(path))
        assert ms.images[0].scale == {"z": 2.0, "y": 0.7, "x": 0.7}
        np.testing.assert_array_equal(np.asarray(ms.images[0].data), data)
        nodes = list(Reader(ome_parse_url(str(path)))())
        np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), data)
        assert any(type(spec).__name__ == "Label" for n in nodes for spec in n.specs)


@pytest.mark.s3
def test_tensorstore_reads_image_on_s3(seaweed) -> None:
    from tests.stores import s3_store

    store = s3_store(seaweed)
    data = _volume("uint16", shape=(6, 40, 50))
    image = write_image(store, "a/b.ome.zarr", data, spacing=(1, 1, 1), layout=LAYOUT)
    np.testing.assert_array_equal(image.tensorstore(0).read().result(), data)


@pytest.mark.s3
def test_handles_sent_to_workers_carry_no_secret(seaweed) -> None:
    import os
    import pickle

    import cloudpickle
    from tests.stores import s3_store

    store = s3_store(seaweed)
    data = _volume("int16", shape=(4, 32, 32))
    image = write_image(store, "w.ome.zarr", data, spacing=(1, 1, 1), layout=LAYOUT)
    secret = os.environ[store.location.secret_env].encode()
    arr = image.array(0)
    graph = image.dask(0)
    for blob in (pickle.dumps(arr), cloudpickle.dumps(graph), pickle.dumps(image)):
        assert secret not in blob
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(arr))[:], data)
    np.testing.assert_array_equal(cloudpickle.loads(cloudpickle.dumps(graph)).compute(), data)


class TestBadInput:
    def _assert_nothing_written(self, store: Store) -> None:
        assert [k for k in store.list() if ".ome.zarr" in k] == []

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"data": np.zeros((4, 8, 8), bool)}, "unsupported image dtype bool"),
            ({"data": np.zeros((4, 8, 8), complex)}, "unsupported image dtype complex128"),
            ({"data": np.zeros((2, 4, 8, 8), "int16")}, "4 dimensions; pass axes="),
            ({"data": np.zeros((0, 8, 8), "int16")}, "empty dimension"),
            ({"spacing": (1, 1)}, "spacing must be 3 positive finite numbers"),
            ({"spacing": (1, -1, 1)}, "spacing must be 3 positive finite numbers"),
            ({"spacing": (1, float("nan"), 1)}, "spacing must be 3 positive finite numbers"),
            ({"origin": (0, 0)}, "origin must be 3 finite numbers"),
            ({"direction": np.eye(3) * 2}, "orthonormal"),
            ({"direction": np.eye(2)}, "3x3 matrix"),
            ({"path": "no-suffix"}, "must end in '.ome.zarr'"),
            ({"path": "../x.ome.zarr"}, "invalid image path"),
            ({"axes": "xyz"}, "axes must be one of"),
            ({"labels": {"m": LabelSpec(np.zeros((4, 8, 8), np.float32))}}, "integer dtype"),
            ({"labels": {"m": LabelSpec(np.zeros((4, 8, 9), np.uint8))}}, "has shape"),
            ({"labels": {"../m": LabelSpec(np.zeros((4, 8, 8), np.uint8))}}, "invalid label name"),
            ({"layout": Layout(chunks=(8, 8))}, "need 3 dimensions"),
        ],
    )
    def test_invalid_arguments(self, tmp_path, kwargs, match) -> None:
        store = open_store(tmp_path)
        args = {"path": "x.ome.zarr", "data": np.zeros((4, 8, 8), "int16"), "spacing": (1, 1, 1)}
        args.update(kwargs)
        with pytest.raises(InvalidInput, match=match):
            write_image(store, args.pop("path"), args.pop("data"), **args)
        self._assert_nothing_written(store)

    def test_layout_validation(self) -> None:
        with pytest.raises(InvalidInput, match="multiple of the chunk"):
            Layout(chunks=(8, 8, 8), shards=(12, 8, 8))
        with pytest.raises(InvalidInput, match="unknown codec"):
            Layout(codec="gzip9")

    def test_existing_image_is_not_replaced_silently(self, tmp_path) -> None:
        store = open_store(tmp_path)
        write_image(store, "x.ome.zarr", np.ones((2, 8, 8), "int16"), spacing=(1, 1, 1))
        with pytest.raises(AlreadyExists, match="overwrite=True"):
            write_image(store, "x.ome.zarr", np.zeros((2, 8, 8), "int16"), spacing=(1, 1, 1))
        assert open_image(store, "x.ome.zarr").read(0).min() == 1
        write_image(
            store, "x.ome.zarr", np.zeros((2, 8, 8), "int16"), spacing=(1, 1, 1), overwrite=True
        )
        assert open_image(store, "x.ome.zarr").read(0).max() == 0

    def test_failed_write_leaves_nothing(self, tmp_path) -> None:
        # Every write to level 1 fails, even after retries: the writer must clean up.
        store = open_store(
            tmp_path,
            faults=FaultConfig(probability=1.0, ops=frozenset({"set"}), pattern="*/1/c/*"),
            retry=RetryPolicy(attempts=2, base_delay=0.001),
        )
        data = _volume("int16", shape=(8, 300, 300))
        with pytest.raises(Exception, match="injected fault"):
            write_image(store, "f.ome.zarr", data, spacing=(1, 1, 1))
        self._assert_nothing_written(open_store(tmp_path))
        with pytest.raises(NotFound, match="no image"):
            open_image(open_store(tmp_path), "f.ome.zarr")

    def test_extra_attributes_cannot_replace_atlas_keys(self, tmp_path) -> None:
        store = open_store(tmp_path)
        with pytest.raises(InvalidInput, match=r"\['status'\]"):
            write_image(store, "x.ome.zarr", np.ones((2, 8, 8), "int16"), spacing=(1, 1, 1),
                        extra_attributes={"status": "writing", "site_note": "ok"})  # fmt: skip
        self._assert_nothing_written(store)
        image = write_image(store, "x.ome.zarr", np.ones((2, 8, 8), "int16"), spacing=(1, 1, 1),
                            extra_attributes={"collection": "lung-ct"})  # fmt: skip
        assert image.metadata.extra == {"collection": "lung-ct"}

    def test_missing_image(self, tmp_path) -> None:
        with pytest.raises(NotFound, match=r"no image at 'nope\.ome\.zarr'"):
            open_image(open_store(tmp_path), "nope.ome.zarr")


def test_leftovers_of_interrupted_write_are_refused_then_replaced(tmp_path) -> None:
    store = open_store(tmp_path)
    # what a killed writer leaves: the 'writing' marker and some arrays, no OME metadata
    store.write_bytes(
        "k.ome.zarr/zarr.json",
        json.dumps({"zarr_format": 3, "node_type": "group",
                    "attributes": {"atlas": {"status": "writing"}}}).encode(),
    )  # fmt: skip
    store.write_bytes("k.ome.zarr/0/c/0/0/0", b"partial shard")
    with pytest.raises(IncompleteImage, match="incomplete"):
        open_image(store, "k.ome.zarr")
    assert find_incomplete(store) == ["k.ome.zarr"]
    data = _volume("int16", shape=(3, 10, 10))
    write_image(store, "k.ome.zarr", data, spacing=(1, 1, 1))
    np.testing.assert_array_equal(open_image(store, "k.ome.zarr").read(0), data)
    assert find_incomplete(store) == []
    assert (
        "k.ome.zarr/0/c/0/0/0" not in store.list()
        or store.read_bytes("k.ome.zarr/0/c/0/0/0") != b"partial shard"
    )


def test_corrupted_chunk_names_chunk_and_object(tmp_path) -> None:
    store = open_store(tmp_path)
    data = _volume("int16", shape=(16, 64, 64))
    write_image(
        store, "c.ome.zarr", data, spacing=(1, 1, 1),
        layout=Layout(chunks=(8, 32, 32), shards=(16, 64, 64), codec="none"),
    )  # fmt: skip
    shard = tmp_path / "c.ome.zarr" / "0" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    # shard index at the end: (offset, nbytes) uint64 per inner chunk in C order, then crc32c
    index = np.frombuffer(bytes(raw[-(8 * 16 + 4) : -4]), dtype="<u8").reshape(2, 2, 2, 2)
    offset = int(index[0, 0, 1, 0])
    raw[offset + 100] ^= 0xFF  # damage inner chunk (0, 0, 1) only
    shard.write_bytes(bytes(raw))
    image = open_image(store, "c.ome.zarr")
    expected = r"chunk \(0, 0, 1\).*shard object 'c\.ome\.zarr/0/c/0/0/0'"
    with pytest.raises(CorruptData, match=expected):
        image.read(0)
    # the other chunks of the same shard still read
    np.testing.assert_array_equal(image.read(0, (slice(0, 8), slice(0, 32), slice(0, 32))),
                                  data[:8, :32, :32])  # fmt: skip
    np.testing.assert_array_equal(image.read(0, (slice(8, 16),)), data[8:16])
    # the dask view reports the same, naming the chunk
    with pytest.raises(CorruptData, match=expected):
        image.dask(0).compute()
    np.testing.assert_array_equal(image.read(0, (slice(0, 8), slice(32, 64), slice(0, 32))),
                                  data[:8, 32:, :32])  # fmt: skip
