"""Server-side tiles: pixels against a direct numpy reslice of the stored levels.

The oracle reads each whole level with zarr-python and reslices it with ``numpy.interp`` on
pixel centres in millimetres (an independent formulation of the sampling in
:mod:`atlas.serve.planes`), windows it and cuts the tile; PNG tiles must match it to one grey
level (float rounding), label colours at known labelled voxels exactly.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from atlas.errors import InvalidInput, NotFound
from atlas.ome import Layout
from atlas.ome.metadata import default_color
from atlas.ome.writer import LabelSpec, write_image
from atlas.read import Reader
from atlas.serve.context import SeriesEntry
from atlas.serve.planes import TILE, Plane, pick_level, plane_geometry, plane_levels
from atlas.serve.render import RenderMemo, TileFormat, TileSpec, render_tile, tile_etag
from atlas.serve.window import Preset, Window, parse_window, window_from_sample
from atlas.storage import open_store

SHAPE = (100, 200, 300)  # z, y, x: 2 x 2 tiles axially and coronally at level 0
SPACING = (2.0, 0.8, 0.6)  # anisotropic in every plane
PATH = "c/subj/series.ome.zarr"
ORGAN = {1: (255, 0, 0, 255), 2: (0, 0, 255, 128)}


def _volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    rng = np.random.default_rng(1)
    vol = (z * 13 + y * 5 - x * 3 + rng.integers(-200, 200, SHAPE) - 600).astype(np.int16)
    organ = np.zeros(SHAPE, np.uint8)
    organ[10:30, 100:180, 60:160] = 1
    organ[15:20, 120:140, 80:100] = 2
    lesion = np.zeros(SHAPE, np.uint16)
    lesion[25:35, 20:60, 200:260] = 7
    return vol, organ, lesion


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    store = open_store(tmp / "s", site="s")
    vol, organ, lesion = _volume()
    write_image(
        store, PATH, vol, spacing=SPACING, modality="CT", pyramid_target=64,
        layout=Layout(chunks=(8, 32, 32), shards=(16, 64, 64)),
        labels={
            "organ": LabelSpec(organ, names={1: "liver", 2: "cyst"}, colors=ORGAN),
            "lesion": LabelSpec(lesion, names={7: "tumour"}),
        },
    )  # fmt: skip
    reader = Reader({"s": store})
    entry = SeriesEntry("s", "c", "subj", "ser-1", 0, PATH, {})
    yield reader, entry, (vol, organ, lesion)
    reader.close()


def _level(reader, entry, level, label=None):
    node = reader.node(entry.ref(label))
    return np.asarray(node.array(level)[:])


def _plane(vol, plane, k):
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    return np.take(vol, k, axis=axis)


def _oracle_axes(info, plane, level):
    """Output size and the level-voxel positions of every output pixel, independently."""
    sp = info.level_spacing(level)
    shape = info.level_shape(level)
    r_ax, c_ax = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}[plane]
    px = min(sp[r_ax], sp[c_ax])
    height, width = round(shape[r_ax] * sp[r_ax] / px), round(shape[c_ax] * sp[c_ax] / px)
    return px, (shape[r_ax], sp[r_ax], height), (shape[c_ax], sp[c_ax], width)


def _resample(values, px, row, col, reverse, nearest=False):
    out = values.astype(np.float64)
    for axis, (n, s, length) in ((0, row), (1, col)):
        mm = (np.arange(length) + 0.5) * px
        if nearest:
            idx = np.minimum((mm // s).astype(int), n - 1)
            out = np.take(out, idx, axis=axis)
        else:
            centres = (np.arange(n) + 0.5) * s
            out = np.apply_along_axis(lambda v, c=centres, m=mm: np.interp(m, c, v), axis, out)
    return out[::-1] if reverse else out


def _expected(reader, entry, plane, level, index, label=None):
    info = reader.info(entry.ref())
    f = info.spatial_factors(level)[Plane(plane).normal]
    values = _plane(_level(reader, entry, level, label), plane, index // f)
    px, row, col = _oracle_axes(info, plane, level)
    return _resample(values, px, row, col, plane != "axial", nearest=label is not None)


def _decode(tile):
    return np.asarray(Image.open(io.BytesIO(tile.data)))


def _window(values, window):
    return np.clip(np.rint((values - window.low) * 255 / window.width), 0, 255)


CASES = [
    ("axial", 0, 17, 1, 1),
    ("axial", 1, 17, 0, 0),
    ("axial", 3, 99, 0, 0),
    ("coronal", 0, 150, 0, 1),
    ("coronal", 0, 199, 1, 0),
    ("coronal", 2, 151, 0, 0),
    ("sagittal", 0, 299, 0, 0),
    ("sagittal", 1, 3, 0, 0),
    ("sagittal", 3, 140, 0, 0),
]


@pytest.mark.parametrize(("plane", "level", "index", "ty", "tx"), CASES)
def test_tile_pixels_match_a_direct_reslice(image, plane, level, index, ty, tx) -> None:
    reader, entry, _ = image
    window = Window(2000, -200)
    tile = render_tile(reader, entry, TileSpec(plane, level, index, ty, tx, window=window))
    assert tile.media_type == "image/png"
    got = _decode(tile).astype(int)
    full = _window(_expected(reader, entry, plane, level, index), window)
    want = full[ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE]
    assert got.shape == want.shape == (tile.height, tile.width)
    assert np.abs(got - want).max() <= 1
    assert np.mean(got != want) < 0.01
    assert want.std() > 10  # the tile shows structure, not a flat fill


def test_geometry_has_the_physical_aspect_ratio(image) -> None:
    reader, entry, _ = image
    info = reader.info(entry.ref())
    ax = plane_geometry(info, "axial", 0)
    assert ax.mm_per_px == 0.6 and (ax.width, ax.height) == (300, 267)  # 200 * 0.8 / 0.6
    assert (ax.tiles_x, ax.tiles_y, ax.slices) == (2, 2, 100)
    co = plane_geometry(info, Plane.CORONAL, 0)
    assert co.mm_per_px == 0.6 and (co.width, co.height) == (300, 333)  # 100 * 2.0 / 0.6
    assert (co.tiles_x, co.tiles_y, co.slices) == (2, 2, 200)
    sa = plane_geometry(info, "sagittal", 0)
    assert sa.mm_per_px == 0.8 and (sa.width, sa.height) == (200, 250)
    for geom in plane_levels(info, "coronal"):
        extent = info.level_shape(geom.level)[0] * info.level_spacing(geom.level)[0]
        assert abs(geom.height * geom.mm_per_px - extent) <= geom.mm_per_px / 2
    last = plane_geometry(info, "axial", len(info.levels) - 1)
    assert last.normal_factor == info.spatial_factors(last.level)[0] > 1
    assert last.level_slices == info.level_shape(last.level)[0] < last.slices
    assert pick_level(info, "axial", 0.5) == 0
    assert pick_level(info, "axial", 1.3) == 1  # level 1: 1.2 mm pixels
    assert pick_level(info, "axial", 100.0) == len(info.levels) - 1
    with pytest.raises(InvalidInput, match="zoom"):
        pick_level(info, "axial", float("nan"))
    assert ax.to_json()["tiles_x"] == 2


def test_label_overlay_colour_at_labelled_voxels(image) -> None:
    reader, entry, (_, organ, lesion) = image
    spec = TileSpec("axial", 0, 17, 0, 0, window="ct-soft-tissue", labels="organ", opacity=1)
    got = _decode(render_tile(reader, entry, spec)).astype(float)
    assert got.shape == (256, 256, 3)
    grey = _window(_expected(reader, entry, "axial", 0, 17), Preset.CT_SOFT_TISSUE.window)
    # output row j shows voxel row floor((j + 0.5) * 0.6 / 0.8); columns are voxels (0.6 mm)
    row, col = int((170 + 0.5) * 0.8 / 0.6), 150
    assert organ[17, 170, 150] == 1 and tuple(got[row, col]) == (255, 0, 0)  # alpha 255
    row, col = int((130 + 0.5) * 0.8 / 0.6), 90
    assert organ[17, 130, 90] == 2  # (0, 0, 255) at alpha 128
    a, g = 128 / 255, grey[row, col]
    assert np.abs(got[row, col] - [g * (1 - a), g * (1 - a), g * (1 - a) + 255 * a]).max() <= 1.5
    assert organ[17, 10, 10] == 0  # outside every label: the grey level on all channels
    assert np.abs(got[13, 10] - grey[13, 10]).max() <= 1
    # the whole label layer against the oracle (nearest voxel)
    lab = _expected(reader, entry, "axial", 0, 17, label="organ")[:256, :256]
    assert np.array_equal(np.all(got == (255, 0, 0), axis=2), lab == 1)
    # coronal, half opacity, a label stored without colours (its default colour), head up
    spec = TileSpec("coronal", 0, 40, 0, 1, labels="all", opacity=0.5)
    got = _decode(render_tile(reader, entry, spec)).astype(float)
    z, x = 30, 258
    assert lesion[z, 40, x] == 7 and organ[z, 40, x] == 0
    u = int((z + 0.5) * 2.0 / 0.6)  # picture row counted from z = 0 ...
    row = 333 - 1 - u  # ... shown from the top
    grey = _window(_expected(reader, entry, "coronal", 0, 40), Preset.CT_SOFT_TISSUE.window)
    r, g, b, alpha = default_color(7)
    a = 0.5 * alpha / 255
    blend = [grey[row, x] * (1 - a) + c * a for c in (r, g, b)]
    assert np.abs(got[row, x - 256] - blend).max() <= 1.5
    row = 333 - 1 - int((40 + 0.5) * 2.0 / 0.6)  # z 40: above the lesion, grey only
    assert lesion[40, 40, x] == 0 and np.abs(got[row, x - 256] - grey[row, x]).max() <= 1


@pytest.mark.parametrize("fmt", list(TileFormat))
def test_each_format_decodes_to_the_tile_size(image, fmt) -> None:
    reader, entry, _ = image
    tile = render_tile(reader, entry, TileSpec("coronal", 0, 10, 0, 1, fmt=fmt, labels="all"))
    assert tile.media_type == f"image/{fmt.value}"
    decoded = Image.open(io.BytesIO(tile.data))
    assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt.value]
    assert decoded.size == (300 - 256, 256) == (tile.width, tile.height)
    assert decoded.mode == "RGB"
    grey = render_tile(reader, entry, TileSpec("axial", 0, 0, 1, 1, fmt=fmt))
    decoded = Image.open(io.BytesIO(grey.data))
    if fmt is TileFormat.WEBP:  # WebP has no grey mode: three equal channels
        rgb = np.asarray(decoded).astype(int)
        assert decoded.mode == "RGB" and np.abs(rgb - rgb[..., :1]).max() <= 2
    else:
        assert decoded.mode == "L"


class CountingReader(Reader):
    """A real reader that records what it is asked to read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list = []

    def read_many(self, requests):
        self.requests.extend(requests)
        return super().read_many(requests)


def test_a_tile_reads_only_its_slab(tmp_path) -> None:
    store = open_store(tmp_path / "tall", site="t")
    tall = np.arange(3000 * 8 * 8, dtype=np.int32).reshape(3000, 8, 8) % 1000
    write_image(store, "c/s/tall.ome.zarr", tall.astype(np.int16), spacing=(1.0, 1.0, 1.0))
    reader = CountingReader({"t": store})
    entry = SeriesEntry("t", "c", "s", "tall", 0, "c/s/tall.ome.zarr", {})
    tile = render_tile(reader, entry, TileSpec("coronal", 0, 4, 5, 0, window="1000,500"))
    assert (tile.width, tile.height) == (8, 256)
    (req,) = reader.requests
    size = req.region.size
    assert size[1] == 1 and size[2] == 8 and size[0] <= 258  # one tile of z, one y slice
    got = _decode(tile).astype(int)
    col = tall[:, 4, :][::-1][5 * 256 : 6 * 256]
    assert np.array_equal(got, _window(col, Window(1000, 500)))
    reader.close()


def test_etag_is_strong_and_normalised(image, tmp_path) -> None:
    reader, entry, _ = image
    memo = RenderMemo()
    info = reader.info(entry.ref())
    f = info.spatial_factors(3)[0]
    a = tile_etag(reader, entry, TileSpec("axial", 3, 2 * f, 0, 0), memo=memo)
    b = tile_etag(reader, entry, TileSpec("axial", 3, 2 * f + 1, 0, 0), memo=memo)
    c = tile_etag(reader, entry, TileSpec("axial", 3, 2 * f + f, 0, 0), memo=memo)
    assert a == b != c and a.startswith('"') and a.endswith('"') and not a.startswith("W/")
    assert a == render_tile(reader, entry, TileSpec("axial", 3, 2 * f, 0, 0), memo=memo).etag
    seen = {
        tile_etag(reader, entry, TileSpec("axial", 0, 1, 0, 0, **kw), memo=memo)
        for kw in (
            {}, {"window": "bone"}, {"window": "400,40"}, {"labels": "organ"},
            {"labels": "organ", "opacity": 0.4}, {"fmt": "webp"}, {"labels": "all"},
        )
    }  # fmt: skip
    assert len(seen) == 7  # preset ct-soft-tissue (CT default) differs from explicit 400,40
    assert tile_etag(reader, entry, TileSpec("axial", 0, 1, 0, 0, opacity=0.1), memo=memo) == (
        tile_etag(reader, entry, TileSpec("axial", 0, 1, 0, 0, opacity=0.9), memo=memo)
    )  # opacity only matters with labels
    # the image rewritten: new metadata, new ETag
    store = open_store(tmp_path / "w", site="w")
    vol = np.zeros((4, 16, 16), np.int16)
    write_image(store, "c/s/w.ome.zarr", vol, spacing=(1, 1, 1))
    w_entry = SeriesEntry("w", "c", "s", "w", 0, "c/s/w.ome.zarr", {})
    before = tile_etag(Reader({"w": store}), w_entry, TileSpec("axial", 0, 0, 0, 0), memo=memo)
    write_image(store, "c/s/w.ome.zarr", vol + 1, spacing=(1, 1, 2), overwrite=True)
    after = tile_etag(
        Reader({"w": store}), w_entry, TileSpec("axial", 0, 0, 0, 0), memo=RenderMemo()
    )
    assert before != after


def test_auto_window_from_the_coarsest_level(tmp_path) -> None:
    store = open_store(tmp_path / "mr", site="m")
    rng = np.random.default_rng(3)
    mr = rng.gamma(2.0, 150.0, (30, 96, 96)).astype(np.uint16)
    write_image(store, "c/s/mr.ome.zarr", mr, spacing=(1, 1, 1), modality="MR", pyramid_target=32)
    reader = CountingReader({"m": store})
    entry = SeriesEntry("m", "c", "s", "mr", 0, "c/s/mr.ome.zarr", {})
    memo = RenderMemo()
    tile = render_tile(reader, entry, TileSpec("axial", 0, 10, 0, 0), memo=memo)  # MR -> auto
    sample_reads = [
        r for r in reader.requests if r.level == len(reader.info(entry.ref()).levels) - 1
    ]
    assert 1 <= len(sample_reads) <= 16
    coarse = _level(reader, entry, len(reader.info(entry.ref()).levels) - 1)
    zs = [r.region.start[0] for r in sample_reads]
    window = window_from_sample(coarse[zs])
    lo, hi = np.percentile(coarse[zs].astype(float), (0.5, 99.5))
    assert abs(window.low - lo) < 1e-6 and abs(window.high - hi) < 1e-6
    px, row, col = _oracle_axes(reader.info(entry.ref()), "axial", 0)
    want = _window(_resample(mr[10], px, row, col, False), window)
    assert np.abs(_decode(tile).astype(int) - want).max() <= 1
    reader.requests.clear()
    render_tile(reader, entry, TileSpec("axial", 0, 11, 0, 0, window="auto"), memo=memo)
    assert len(reader.requests) == 1  # the window is cached: only the tile's slab is read
    reader.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"plane": "oblique"}, "plane must be one of axial, coronal, sagittal"),
        ({"level": -1}, "level must be an integer"),
        ({"index": "3"}, "index must be an integer"),
        ({"ty": 2.5}, "ty must be an integer"),
        ({"tx": True}, "tx must be an integer"),
        ({"index": 1 << 40}, "between 0 and 2"),
        ({"window": "0,40"}, "width must be > 0"),
        ({"window": "-5,40"}, "width must be > 0"),
        ({"window": "nan,40"}, "window must be one of"),
        ({"window": "1e12,0"}, "within"),
        ({"window": "soft"}, "window must be one of ct-soft-tissue"),
        ({"window": "1,2,3"}, "window must be one of"),
        ({"opacity": 1.5}, "opacity must be a number between 0 and 1"),
        ({"opacity": "x"}, "opacity"),
        ({"fmt": "gif"}, "format must be one of png, jpeg, webp"),
        ({"labels": "../organ"}, "label names are"),
        ({"labels": 5}, "labels must be"),
    ],
)
def test_malformed_requests_are_refused(kwargs, message) -> None:
    args = {"plane": "axial", "level": 0, "index": 0, "ty": 0, "tx": 0, **kwargs}
    with pytest.raises(InvalidInput, match=message):
        TileSpec(**args)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TileSpec("axial", 9, 0, 0, 0), r"levels 0\.\.3, not 9"),
        (TileSpec("axial", 0, 100, 0, 0), r"axial slices 0\.\.99, not 100"),
        (TileSpec("sagittal", 0, 300, 0, 0), r"sagittal slices 0\.\.299, not 300"),
        (TileSpec("axial", 0, 0, 2, 0), r"tiles ty 0\.\.1, tx 0\.\.1, not \(2, 0\)"),
        (TileSpec("coronal", 1, 0, 0, 1), r"tx 0\.\.0"),
        (TileSpec("axial", 0, 0, 0, 0, labels="organ,spleen,x"), "'spleen', 'x'"),
    ],
)
def test_requests_outside_the_image_are_not_found(image, spec, message) -> None:
    reader, entry, _ = image
    with pytest.raises(NotFound, match=message):
        render_tile(reader, entry, spec)
    with pytest.raises(NotFound, match=message):
        tile_etag(reader, entry, spec)


def test_window_parsing() -> None:
    assert parse_window("lung") is Preset.LUNG
    assert parse_window(" BONE ") is Preset.BONE
    assert parse_window("350, 50") == Window(350, 50)
    assert parse_window("1.5e3,-6e2") == Window(1500, -600)
    assert Preset.BRAIN.window == Window(80, 40) and Preset.AUTO.window is None
    w = Window(400, 40)
    values = np.array([-161, -160, 40, 240, 241, 1000], dtype=np.int16)
    assert w.apply(values).tolist() == [0, 0, 128, 255, 255, 255]
    with pytest.raises(InvalidInput, match="finite"):
        Window(float("inf"), 0)
    with pytest.raises(InvalidInput):
        parse_window(None)
