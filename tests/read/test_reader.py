"""atlas.read.Reader on a local store: every region kind, both engines, padding, geometry, input."""

from __future__ import annotations

import numpy as np
import pytest
from tests.read.read_study import IMAGE, SHAPE, Written, write_study

from atlas.errors import InvalidInput, NotFound
from atlas.ome import open_image, write_image
from atlas.read import Engine, ImageRef, OutOfBounds, Reader, ReadRequest, Region
from atlas.storage import FaultConfig, open_store

ENGINES = [Engine.TENSORSTORE, Engine.ZARR]


def _requests(ref: ImageRef, label: ImageRef) -> list[ReadRequest]:
    z, y, x = SHAPE
    return [
        ReadRequest(ref, Region.plane("axial", 7, SHAPE)),
        ReadRequest(ref, Region.plane("coronal", 33, SHAPE)),
        ReadRequest(ref, Region.plane(2, 0, SHAPE)),
        ReadRequest(ref, Region.centred((10, 24, 20), (8, 16, 16))),
        ReadRequest(ref, Region((3, 10, 5), (19, 47, 39))),  # spans shards on every axis
        ReadRequest(ref),  # the whole volume
        ReadRequest(ref, level=1),
        ReadRequest(ref, Region((1, 2, 3), (9, 20, 17)), level=1),
        ReadRequest(ref, Region.plane("sagittal", 4, (10, 12, 10)), level=2),
        ReadRequest(label),
        ReadRequest(label, Region((0, 20, 10), (12, 40, 30))),
        ReadRequest(label, Region((2, 3, 4), (6, 9, 8)), level=1),
        ReadRequest(ref, Region((-3, -5, 30), (5, 10, 50))),  # out of bounds: padded
        ReadRequest(ref, Region((z + 1, 0, 0), (z + 3, y, x))),  # wholly outside
        ReadRequest(label, Region((15, 40, 35), (25, 60, 45))),
    ]


def _truth(study: Written, request: ReadRequest, fill: float) -> np.ndarray:
    """What a request should return, from zarr-python (level > 0) or the written arrays."""
    image = open_image(study.store, study.path)
    node = image.label(request.image.label) if request.image.label else image
    level = node.read(request.level)
    if request.region is None:
        return level
    out = np.full(request.region.size, fill, dtype=level.dtype)
    bounds = zip(request.region.start, request.region.stop, level.shape, strict=True)
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in bounds)
    dst = tuple(
        slice(s.start - a, s.stop - a) for s, a in zip(src, request.region.start, strict=True)
    )
    if all(s.stop > s.start for s in src):
        out[dst] = level[src]
    return out


def test_both_engines_return_the_stored_values_for_every_region_kind(local_study: Written) -> None:
    ref = ImageRef("local", IMAGE)
    reqs = _requests(ref, ImageRef("local", IMAGE, label="organs"))
    results = {
        e: Reader({"local": local_study.store}, engine=e, fill=-7).read_many(reqs) for e in ENGINES
    }
    np.testing.assert_array_equal(results[Engine.ZARR][5].data, local_study.data)
    np.testing.assert_array_equal(results[Engine.ZARR][9].data, local_study.label)
    for i, req in enumerate(reqs):
        want = _truth(local_study, req, fill=0 if req.image.label else -7)
        for engine in ENGINES:
            patch = results[engine][i]
            assert patch.data.shape == (req.region.size if req.region else want.shape)
            assert patch.data.dtype == want.dtype, (engine, i)
            np.testing.assert_array_equal(patch.data, want, err_msg=f"{engine} request {i}")
        a, b = results[Engine.TENSORSTORE][i], results[Engine.ZARR][i]
        assert a.padded == b.padded == (i in (12, 13, 14))
        np.testing.assert_array_equal(a.affine, b.affine)
    # the whole-volume request came back with its region resolved
    assert results[Engine.TENSORSTORE][5].request.region == Region.whole(SHAPE)
    # planes are 1 voxel thick along their axis
    assert [results[Engine.ZARR][i].data.shape for i in range(3)] == [
        (1, 48, 40),
        (20, 1, 40),
        (20, 48, 1),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_out_of_bounds_pads_with_the_fill_or_is_refused(
    local_study: Written, engine: Engine
) -> None:
    ref = ImageRef("local", IMAGE)
    region = Region((-2, 44, 36), (3, 52, 44))
    patch = Reader({"local": local_study.store}, engine=engine, fill=5).read(
        ReadRequest(ref, region)
    )
    assert patch.padded and patch.data.shape == (5, 8, 8)
    np.testing.assert_array_equal(patch.data[2:, :4, :4], local_study.data[:3, 44:, 36:])
    outside = np.ones(patch.data.shape, dtype=bool)
    outside[2:, :4, :4] = False
    assert (patch.data[outside] == 5).all()
    strict = Reader({"local": local_study.store}, engine=engine, out_of_bounds="raise")
    with pytest.raises(InvalidInput, match=r"partly outside level 0 .*shape \(20, 48, 40\)"):
        strict.read(ReadRequest(ref, region))
    inside = strict.read(ReadRequest(ref, Region((0, 40, 32), (3, 48, 40))))
    assert not inside.padded
    np.testing.assert_array_equal(inside.data, local_study.data[:3, 40:, 32:])


def test_patch_affine_puts_each_voxel_where_the_whole_volume_has_it(local_study: Written) -> None:
    reader = Reader({"local": local_study.store})
    ref = ImageRef("local", IMAGE)
    info = reader.info(ref)
    start = (4, 17, 9)
    patch = reader.read(ReadRequest(ref, Region(start, (12, 33, 29))))
    # place the patch back into an empty volume: the voxels land where they came from
    back = np.zeros(SHAPE, dtype=patch.data.dtype)
    back[patch.request.region.slices()] = patch.data
    np.testing.assert_array_equal(back[4:12, 17:33, 9:29], local_study.data[4:12, 17:33, 9:29])
    # and a voxel's patient position agrees with the whole-volume affine
    j = np.array([3, 5, 7])
    in_patch = patch.affine @ np.r_[j, 1]
    in_volume = info.affine @ np.r_[np.asarray(start) + j, 1]
    np.testing.assert_allclose(in_patch, in_volume)
    np.testing.assert_allclose(patch.origin, (info.affine @ np.r_[start, 1])[:3])
    np.testing.assert_allclose(patch.spacing, (2.5, 0.8, 0.7))
    np.testing.assert_allclose(patch.direction @ np.diag(patch.spacing), patch.affine[:3, :3])
    # level 1 halves y and x: its voxel sits at the centre of the 2 x 2 voxels it averages
    coarse = reader.read(ReadRequest(ref, Region((2, 3, 4), (6, 9, 8)), level=1))
    np.testing.assert_allclose(coarse.spacing, (2.5, 1.6, 1.4))
    k = np.array([1, 2, 3])
    z, y, x = np.asarray((2, 3, 4)) + k
    fine = [info.affine @ np.r_[z, 2 * y + dy, 2 * x + dx, 1] for dy in (0, 1) for dx in (0, 1)]
    np.testing.assert_allclose(coarse.affine @ np.r_[k, 1], np.mean(fine, axis=0), atol=1e-9)
    # a label patch shares the image's geometry
    label = reader.read(ReadRequest(ImageRef("local", IMAGE, "organs"), Region(start, (5, 18, 10))))
    np.testing.assert_allclose(label.affine, patch.affine)


def test_read_many_keeps_the_order_given_across_images_and_levels(tmp_path) -> None:
    store = open_store(tmp_path / "s", site="x")
    first = write_study(store, "a/one.ome.zarr", seed=1)
    second = write_study(store, "a/two.ome.zarr", seed=2)
    reader = Reader({"x": store}, concurrency=2)  # a small budget: many windows
    rng = np.random.default_rng(3)
    reqs, want = [], []
    for _ in range(40):
        which = first if rng.random() < 0.5 else second
        start = tuple(int(rng.integers(0, n - 4)) for n in SHAPE)
        region = Region(start, tuple(s + 4 for s in start))
        reqs.append(ReadRequest(ImageRef("x", which.path), region))
        want.append(which.data[region.slices()])
    for patch, expected, req in zip(reader.read_many(reqs), want, reqs, strict=True):
        assert patch.request.image == req.image
        np.testing.assert_array_equal(patch.data, expected)
    assert reader.read_many([]) == []


def test_a_safe_dtype_is_applied_and_an_unsafe_one_refused(local_study: Written) -> None:
    reader = Reader({"local": local_study.store})
    ref = ImageRef("local", IMAGE)
    patch = reader.read(ReadRequest(ref, Region((0, 0, 0), (2, 4, 4)), dtype="float32"))
    assert patch.data.dtype == np.float32
    np.testing.assert_array_equal(patch.data, local_study.data[:2, :4, :4].astype("float32"))
    with pytest.raises(InvalidInput, match=r"stored as int16; reading it as uint8"):
        reader.read(ReadRequest(ref, dtype="uint8"))
    with pytest.raises(InvalidInput, match=r"'int7' is not a dtype"):
        ReadRequest(ref, dtype="int7")
    # a fill the output cannot hold is refused when padding would use it
    with pytest.raises(InvalidInput, match=r"fill 0.5 cannot be stored exactly as int16"):
        Reader({"local": local_study.store}, fill=0.5).read(
            ReadRequest(ref, Region((-1, 0, 0), (1, 2, 2)))
        )


def test_bad_input_is_refused_before_any_pixel_is_read(local_study: Written) -> None:
    # every chunk read fails on this handle: a bad request must be caught before any is made
    faults = FaultConfig(probability=1.0, pattern="*/c/*")
    broken = open_store(local_study.store.location.root, site="local", faults=faults, retry=None)
    reader = Reader({"local": broken}, engine="zarr")
    ref = ImageRef("local", IMAGE)
    good = ReadRequest(ref, Region((0, 0, 0), (2, 2, 2)))
    cases = [
        (ImageRef("elsewhere", IMAGE), None, NotFound, r"unknown site 'elsewhere'.*\['local'\]"),
        (ImageRef("local", "no/such.ome.zarr"), None, NotFound, r"no image at 'no/such\.ome"),
        (ImageRef("local", IMAGE, "bones"), None, NotFound, r"no label 'bones'"),
        (ref, {"level": 3}, InvalidInput, r"has levels 0\.\.2, not 3"),
        (ref, {"region": Region((0, 0), (2, 2))}, InvalidInput,
         r"has 2 axes; level 0 of shape \(20, 48, 40\) needs 3"),
        (ref, {"dtype": "int8"}, InvalidInput, r"stored as int16; reading it as int8"),
    ]  # fmt: skip
    for image, options, error, message in cases:
        bad = ReadRequest(image, **(options or {}))
        with pytest.raises(error, match=message):
            reader.read_many([good, bad])
        with pytest.raises(error, match=message):
            reader.validate(bad)
    with pytest.raises(InvalidInput, match=r"size must be positive.*size \(2, -2, 2\)"):
        Region((0, 4, 0), (2, 2, 2))
    with pytest.raises(InvalidInput, match=r"non-negative integer, got -1"):
        ReadRequest(ref, level=-1)
    with pytest.raises(
        InvalidInput, match=r"engine must be one of 'tensorstore', 'zarr', got 'numpy'"
    ):
        Reader({"local": broken}, engine="numpy")
    with pytest.raises(InvalidInput, match=r"out_of_bounds must be one of 'pad', 'raise'"):
        Reader({"local": broken}, engine="zarr", out_of_bounds="wrap")
    with pytest.raises(InvalidInput, match=r"concurrency must be a positive integer"):
        Reader({"local": broken}, engine="zarr", concurrency=0)
    with pytest.raises(
        InvalidInput, match=r"site 'local'.*injects latency or faults.*engine='zarr'"
    ):
        Reader({"local": broken}, engine="tensorstore")
    with pytest.raises(InvalidInput, match=r"map site names"):
        Reader({"local": "/tmp/somewhere"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match=r"plane axis must be one of"):
        Region.plane("oblique", 0, SHAPE)
    # and the broken handle really fails a read: the checks above came first
    with pytest.raises(Exception, match="injected fault"):
        reader.read(good)


def test_region_helpers() -> None:
    assert Region.whole((3, 4)) == Region((0, 0), (3, 4))
    assert Region.centred((10, 10, 10), (4, 5, 1)) == Region((8, 8, 10), (12, 13, 11))
    assert Region.plane("coronal", 2, (2, 5, 6, 7)) == Region((0, 0, 2, 0), (2, 5, 3, 7))
    assert Region((1, 2), (4, 8)).size == (3, 6)
    assert OutOfBounds("pad") is OutOfBounds.PAD


@pytest.mark.parametrize("engine", ENGINES)
def test_channel_and_2d_images(tmp_path, engine) -> None:
    store = open_store(tmp_path / "s", site="s")
    rng = np.random.default_rng(8)
    four = rng.integers(0, 4000, size=(2, 12, 20, 24)).astype("uint16")
    flat = rng.integers(-100, 100, size=(40, 36)).astype("int16")
    write_image(store, "c.ome.zarr", four, spacing=(2, 1, 1), axes="czyx", max_levels=1)
    write_image(store, "f.ome.zarr", flat, spacing=(0.5, 0.4), axes="yx", max_levels=1)
    reader = Reader({"s": store}, engine=engine)
    chan, plane = ImageRef("s", "c.ome.zarr"), ImageRef("s", "f.ome.zarr")
    # a spatial-only region of a channel image reads every channel
    spatial = reader.read(ReadRequest(chan, Region((2, 3, 4), (6, 9, 12))))
    np.testing.assert_array_equal(spatial.data, four[:, 2:6, 3:9, 4:12])
    one = reader.read(ReadRequest(chan, Region((1, 2, 3, 4), (2, 6, 9, 12))))
    np.testing.assert_array_equal(one.data, four[1:2, 2:6, 3:9, 4:12])
    np.testing.assert_allclose(spatial.affine, one.affine)
    np.testing.assert_allclose(spatial.origin, (reader.info(chan).affine @ [2, 3, 4, 1])[:3])
    # a 2-D image: a 4 x 3 affine over (y, x)
    patch = reader.read(ReadRequest(plane, Region((30, 30), (44, 40))))
    assert patch.padded and patch.affine.shape == (4, 3)
    np.testing.assert_array_equal(patch.data[:10, :6], flat[30:, 30:])
    np.testing.assert_allclose(patch.affine @ [1, 2, 1], reader.info(plane).affine @ [31, 32, 1])
    row = reader.read(ReadRequest(plane, Region.plane(0, 5, flat.shape)))
    np.testing.assert_array_equal(row.data, flat[5:6])


@pytest.mark.parametrize("engine", ENGINES)
def test_an_image_written_again_with_another_shape_is_read_anew(tmp_path, engine) -> None:
    store = open_store(tmp_path / "s", site="s")
    ref = ImageRef("s", "w.ome.zarr")
    first = np.arange(4 * 8 * 8, dtype="int16").reshape(4, 8, 8)
    write_image(store, ref.path, first, spacing=(1, 1, 1), max_levels=1)
    np.testing.assert_array_equal(
        Reader({"s": store}, engine=engine).read(ReadRequest(ref)).data, first
    )
    second = -np.arange(6 * 8 * 8, dtype="int16").reshape(6, 8, 8)
    write_image(store, ref.path, second, spacing=(1, 1, 1), max_levels=1, overwrite=True)
    again = Reader({"s": store}, engine=engine).read(ReadRequest(ref))  # a new reader, same process
    np.testing.assert_array_equal(again.data, second)
