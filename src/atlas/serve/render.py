"""Server-side MPR tiles: one 256-px tile of one plane, resliced from the chunked volume.

:func:`render_tile` reads only the voxels its tile needs: the one-slice slab of the requested
level along the plane's normal, cut to the voxel rows and columns the tile's pixels sample
(one :meth:`atlas.read.Reader.read_many` for the image and its selected label images), so a
3,000-slice series is never read whole. The picture is resampled to square pixels
(:mod:`atlas.serve.planes`; linear interpolation of the image, nearest voxel of the labels),
windowed to grey (:mod:`atlas.serve.window`), overlaid with the label images in their OME-Zarr
``image-label`` colours at the requested opacity, and encoded with Pillow.

Its ETag (:func:`tile_etag`) is strong: a hash of the image's metadata (the ``zarr.json`` of
the image and of each label image drawn) and of the normalised request (the level's own slice
rather than the level-0 index, resolved label names and window), so it changes whenever the
image is rewritten and is equal for requests that draw the same pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from atlas.errors import InvalidInput, NotFound
from atlas.ome import OmeImage, OmeLabel
from atlas.ome.metadata import default_color
from atlas.read import ImageInfo, Reader, ReadRequest, Region
from atlas.serve.choices import parse_choice
from atlas.serve.context import SeriesEntry
from atlas.serve.planes import Plane, PlaneGeometry, axis_samples, parse_plane, plane_geometry
from atlas.serve.window import (
    AUTO_SAMPLE_SLICES,
    Preset,
    Window,
    WindowStats,
    default_window,
    parse_window,
    window_from_sample,
)

__all__ = [
    "ALL_LABELS",
    "RenderMemo",
    "RenderedTile",
    "TileFormat",
    "TileSpec",
    "render_tile",
    "tile_etag",
]

#: ``labels=all``: every label image of the series
ALL_LABELS = "all"
#: metadata hashes are re-read after this many seconds (a rewritten image gets a new ETag)
DIGEST_TTL_S = 30.0
#: voxels of the coarsest level the ``auto`` window samples at most (about; whole slices)
AUTO_SAMPLE_VOXELS = 1 << 20
_LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class TileFormat(StrEnum):
    """Encodings of a tile."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        """The HTTP ``Content-Type``."""
        return f"image/{self.value}"


def _index(value: Any, what: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidInput(f"{what} must be an integer >= 0, got {value!r:.40}")
    out = int(value.__index__())
    if out < 0 or out > 1 << 31:
        raise InvalidInput(f"{what} must be an integer between 0 and 2^31, got {out}")
    return out


def _labels(value: Any) -> str | tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == ALL_LABELS:
            return ALL_LABELS
        if text.lower() in ("", "none"):
            return ()
        items: Sequence[Any] = text.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise InvalidInput(f"labels must be 'all', 'none' or label names, got {value!r:.80}")
    names: list[str] = []
    for item in items:
        name = item.strip() if isinstance(item, str) else item
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
            raise InvalidInput(
                f"label names are 1-128 letters, digits, '.', '_' or '-', got {item!r:.80}"
            )
        if name not in names:
            names.append(name)
    if len(names) > 64:
        raise InvalidInput(f"at most 64 label images per tile, got {len(names)}")
    return tuple(names)


def _opacity(value: Any) -> float:
    out = math.nan
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            out = float(value)
    if not math.isfinite(out) or not 0 <= out <= 1:
        raise InvalidInput(f"opacity must be a number between 0 and 1, got {value!r:.40}")
    return round(out, 3)


def _format(value: Any) -> TileFormat:
    return parse_choice(TileFormat, value, "tile format", fold_case=True)


@dataclass(frozen=True)
class TileSpec:
    """One tile request, checked on construction (no I/O; :class:`InvalidInput` if malformed).

    Parameters
    ----------
    plane
        ``axial``, ``coronal`` or ``sagittal`` (or a :class:`~atlas.serve.planes.Plane`).
    level
        Pyramid level.
    index
        Slice along the plane's normal, in level-0 voxels (z, y or x).
    ty, tx
        Tile row and column in the level's tile grid.
    window
        A preset name, ``"W,C"``, a :class:`~atlas.serve.window.Window`, or ``None`` for the
        image's default (CT soft tissue for CT, ``auto`` otherwise).
    labels
        ``"all"``, ``"none"`` / ``()``, comma-separated names or a sequence of names (drawn
        in that order, later ones on top).
    opacity
        Label overlay opacity, 0..1 (times each colour's own alpha); kept to 3 decimals.
    fmt
        ``png``, ``jpeg`` or ``webp`` (the route's ``.{fmt}``).
    """

    plane: Plane
    level: int
    index: int
    ty: int
    tx: int
    window: Preset | Window | None = None
    labels: str | tuple[str, ...] = ()
    opacity: float = 0.5
    fmt: TileFormat = TileFormat.PNG

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "plane", parse_plane(self.plane))
        for name in ("level", "index", "ty", "tx"):
            set_(self, name, _index(getattr(self, name), name))
        if self.window is not None:
            set_(self, "window", parse_window(self.window))
        set_(self, "labels", _labels(self.labels))
        set_(self, "opacity", _opacity(self.opacity))
        set_(self, "fmt", _format(self.fmt))


@dataclass(frozen=True)
class RenderedTile:
    """An encoded tile: its bytes, ``Content-Type`` and strong ETag (quoted, as sent)."""

    data: bytes
    media_type: str
    etag: str
    width: int = 0
    height: int = 0


class RenderMemo:
    """What renders remember between requests: metadata hashes (30 s) and ``auto`` windows.

    One per process is used by default; pass your own to :func:`render_tile` to isolate it.
    """

    def __init__(self, max_items: int = 4096) -> None:
        self.windows = WindowStats(max_items)
        self._max = max_items
        self._lock = threading.Lock()
        self._digests: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def digest(self, reader: Reader, site: str, key: str) -> str:
        """SHA-256 of the store object ``key`` of ``site`` (re-read after :data:`DIGEST_TTL_S`)."""
        now = time.monotonic()
        with self._lock:
            hit = self._digests.get((site, key))
        if hit is not None and now - hit[0] < DIGEST_TTL_S:
            return hit[1]
        value = hashlib.sha256(reader.store(site).read_bytes(key)).hexdigest()
        with self._lock:
            self._digests[(site, key)] = (now, value)
            self._digests.move_to_end((site, key))
            while len(self._digests) > self._max:
                self._digests.popitem(last=False)
        return value


_MEMO = RenderMemo()


@dataclass(frozen=True)
class _Plan:
    """A tile request resolved against its image (everything but the pixels)."""

    info: ImageInfo
    image: OmeImage
    geometry: PlaneGeometry
    slab: int
    labels: tuple[str, ...]
    window: Preset | Window
    etag: str


def _resolve(reader: Reader, entry: SeriesEntry, spec: TileSpec, memo: RenderMemo) -> _Plan:
    if not isinstance(spec, TileSpec):
        raise InvalidInput(f"expected a TileSpec, got {spec!r:.80}")
    ref = entry.ref()
    info = reader.info(ref)
    image = reader.node(ref)
    assert isinstance(image, OmeImage)
    what = f"series {entry.series_id!r}"
    n_levels = len(info.levels)
    if spec.level >= n_levels:
        raise NotFound(f"{what} has pyramid levels 0..{n_levels - 1}, not {spec.level}")
    geom = plane_geometry(info, spec.plane, spec.level)
    if spec.index >= geom.slices:
        raise NotFound(
            f"{what} has {spec.plane.value} slices 0..{geom.slices - 1}, not {spec.index}"
        )
    if spec.ty >= geom.tiles_y or spec.tx >= geom.tiles_x:
        raise NotFound(
            f"{what} {spec.plane.value} level {spec.level} has tiles ty 0..{geom.tiles_y - 1}, "
            f"tx 0..{geom.tiles_x - 1}, not ({spec.ty}, {spec.tx})"
        )
    available = image.label_names
    if spec.labels == ALL_LABELS:
        labels = tuple(available)
    else:
        labels = tuple(spec.labels)
        unknown = [n for n in labels if n not in available]
        if unknown:
            raise NotFound(
                f"{what} has no label image(s) {', '.join(map(repr, unknown))}; "
                f"it has {list(available) or 'none'}"
            )
    window = spec.window if spec.window is not None else default_window(image.metadata.modality)
    slab = min(spec.index // geom.normal_factor, geom.level_slices - 1)
    keys = [f"{ref.path}/zarr.json"] + [f"{ref.path}/labels/{n}/zarr.json" for n in labels]
    normal = {
        "plane": spec.plane.value,
        "level": spec.level,
        "slab": slab,
        "ty": spec.ty,
        "tx": spec.tx,
        "window": window.value if isinstance(window, Preset) else window.key(),
        "labels": list(labels),
        "opacity": spec.opacity if labels else None,
        "format": spec.fmt.value,
        "metadata": [memo.digest(reader, ref.site, k) for k in keys],
        "image": [ref.site, ref.path],
    }
    text = json.dumps(normal, sort_keys=True, separators=(",", ":"))
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:40] + '"'
    return _Plan(info, image, geom, slab, labels, window, etag)


def tile_etag(
    reader: Reader, entry: SeriesEntry, spec: TileSpec, *, memo: RenderMemo | None = None
) -> str:
    """The strong ETag :func:`render_tile` would give (checks the request; reads no pixels).

    Raises
    ------
    InvalidInput, NotFound
        As for :func:`render_tile`.
    """
    return _resolve(reader, entry, spec, memo or _MEMO).etag


def auto_window(reader: Reader, entry: SeriesEntry, *, memo: RenderMemo | None = None) -> Window:
    """The ``auto`` window of a series: percentiles of a bounded sample of its coarsest level.

    Up to :data:`~atlas.serve.window.AUTO_SAMPLE_SLICES` evenly spaced axial slices of the
    coarsest level are read (fewer when its slices are large, about
    :data:`AUTO_SAMPLE_VOXELS` voxels in all); the result is cached per image version.
    """
    memo = memo or _MEMO
    ref = entry.ref()
    key = (ref.site, ref.path, memo.digest(reader, ref.site, f"{ref.path}/zarr.json"))
    found = memo.windows.get(key)
    if found is not None:
        return found
    info = reader.info(ref)
    level = len(info.levels) - 1
    shape = info.level_shape(level)
    nz = shape[-3]
    per_slice = max(1, shape[-2] * shape[-1])
    count = max(1, min(AUTO_SAMPLE_SLICES, nz, AUTO_SAMPLE_VOXELS // per_slice))
    zs = sorted({int(z) for z in np.linspace(0, nz - 1, count).round()})
    lead = info.ndim - 3
    requests = [
        ReadRequest(
            ref,
            Region((0,) * lead + (z, 0, 0), (*shape[:lead], z + 1, *shape[-2:])),
            level=level,
        )
        for z in zs
    ]
    sample = np.concatenate([p.data.ravel() for p in reader.read_many(requests)])
    window = window_from_sample(sample)
    memo.windows.put(key, window)
    return window


def _region(info: ImageInfo, plane: Plane, slab: int, rows: range, cols: range) -> Region:
    start, stop = [0, 0, 0], [0, 0, 0]
    start[plane.normal], stop[plane.normal] = slab, slab + 1
    start[plane.row_axis], stop[plane.row_axis] = rows.start, rows.stop
    start[plane.col_axis], stop[plane.col_axis] = cols.start, cols.stop
    lead = info.ndim - 3
    return Region((0,) * lead + tuple(start), (1,) * lead + tuple(stop))


def _interp(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray, axis: int) -> Any:
    a = np.take(values, lo, axis=axis)
    if not w.any():
        return a
    b = np.take(values, hi, axis=axis)
    shape = [1, 1]
    shape[axis] = -1
    wb = w.reshape(shape)
    return a + (b - a) * wb


def _overlay(
    grey: np.ndarray, layers: list[tuple[np.ndarray, OmeLabel]], opacity: float
) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for values, label in layers:
        colours = label.info.colors
        for v in np.unique(values):
            value = int(v)
            if value == 0:
                continue
            r, g, b, a = colours.get(value, default_color(value))
            alpha = opacity * a / 255.0
            if alpha <= 0:
                continue
            mask = values == v
            colour = np.asarray([r, g, b], dtype=np.float32)
            rgb[mask] = rgb[mask] * (1 - alpha) + colour * alpha
    out: np.ndarray = np.rint(np.clip(rgb, 0, 255)).astype(np.uint8)
    return out


def _encode(pixels: np.ndarray, fmt: TileFormat) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
    buf = io.BytesIO()
    if fmt is TileFormat.PNG:
        image.save(buf, format="PNG", compress_level=1)
    elif fmt is TileFormat.JPEG:
        image.save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="WEBP", quality=90, method=2)
    return buf.getvalue()


def render_tile(
    reader: Reader, entry: SeriesEntry, spec: TileSpec, *, memo: RenderMemo | None = None
) -> RenderedTile:
    """Render one tile of ``entry`` (see the module doc for what is read and how).

    Parameters
    ----------
    reader
        The reader of the series' site.
    entry
        The series volume (from :meth:`atlas.serve.context.ServeContext.series`, which has
        already checked the caller's grant).
    spec
        The tile.
    memo
        Metadata hashes and ``auto`` windows (default: this process's).

    Raises
    ------
    InvalidInput
        Not a 3-D single-channel image, or a malformed request.
    NotFound
        A level, slice, tile or label image the series does not have (the message names
        the valid range or the label images it has).
    CorruptData, StoreUnavailable, Forbidden
        From the read (:meth:`atlas.read.Reader.read_many`).
    """
    memo = memo or _MEMO
    plan = _resolve(reader, entry, spec, memo)
    geom, plane = plan.geometry, spec.plane
    window = plan.window
    if isinstance(window, Preset):
        window = window.window or auto_window(reader, entry, memo=memo)
    r0, r1, c0, c1 = geom.tile_box(spec.ty, spec.tx)
    rows = axis_samples(
        geom.rows, geom.row_spacing, geom.mm_per_px, geom.height, r0, r1, plane.rows_reversed
    )
    cols = axis_samples(geom.cols, geom.col_spacing, geom.mm_per_px, geom.width, c0, c1, False)
    rr, cr = range(rows.start, rows.stop), range(cols.start, cols.stop)
    ref = entry.ref()
    requests = [ReadRequest(ref, _region(plan.info, plane, plan.slab, rr, cr), level=spec.level)]
    for name in plan.labels:
        label_info = reader.info(entry.ref(name))
        requests.append(
            ReadRequest(
                entry.ref(name), _region(label_info, plane, plan.slab, rr, cr), level=spec.level
            )
        )
    patches = reader.read_many(requests)
    slab = patches[0].data.reshape(len(rr), len(cr))
    values = slab.astype(np.float32, copy=False)
    values = _interp(values, rows.lo - rr.start, rows.hi - rr.start, rows.weight, 0)
    values = _interp(values, cols.lo - cr.start, cols.hi - cr.start, cols.weight, 1)
    pixels = window.apply(values)
    if plan.labels:
        layers = []
        for name, patch in zip(plan.labels, patches[1:], strict=True):
            lab = patch.data.reshape(len(rr), len(cr))
            lab = lab[np.ix_(rows.nearest - rr.start, cols.nearest - cr.start)]
            node = reader.node(entry.ref(name))
            assert isinstance(node, OmeLabel)
            layers.append((lab, node))
        pixels = _overlay(pixels, layers, spec.opacity)
    return RenderedTile(
        data=_encode(pixels, spec.fmt),
        media_type=spec.fmt.media_type,
        etag=plan.etag,
        width=c1 - c0,
        height=r1 - r0,
    )
