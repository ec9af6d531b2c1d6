"""Write an OME-Zarr v0.5 image (with labels) as sharded, checksummed zarr v3 arrays.

Atomic from a reader's point of view: the image group's ``zarr.json`` is written first with
``atlas.status = "writing"`` and no ``ome`` block, and is replaced by the full metadata (with
``status = "complete"``) only after every array of every level and label is written. An image
whose write was interrupted therefore never looks complete: :func:`atlas.ome.open_image`
refuses it with :class:`atlas.errors.IncompleteImage`, and the next write to the same path
clears the leftovers first. When a write fails with an exception, what it wrote is deleted.

Memory stays bounded: level 0 is copied from the source in slabs one shard deep, and each
further level is built from the previous one read back slab by slab, so a dask array larger
than memory can be written.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zarr

from atlas.errors import AlreadyExists, InvalidInput, NotFound
from atlas.kernels import downsample_mean, downsample_mode
from atlas.ome.layout import Layout
from atlas.ome.metadata import (
    ATLAS_FORMAT,
    ATLAS_KEYS,
    CT_WINDOWS,
    OME_VERSION,
    STATUS_COMPLETE,
    STATUS_WRITING,
    LabelInfo,
    LevelInfo,
    WindowPreset,
    affine_matrix,
    check_direction,
    check_slice_step,
    default_color,
    default_direction,
    label_json,
    make_axes,
    multiscales_json,
    ome_translation,
    omero_json,
)
from atlas.ome.pyramid import PlannedLevel, plan_levels
from atlas.storage import Store, open_store

IMAGE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
LABEL_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32")
SUFFIX = ".ome.zarr"


class ArrayLike(Protocol):
    """Anything with a shape, a dtype and numpy-style slicing (numpy, dask, zarr arrays)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        ...

    @property
    def dtype(self) -> Any:
        """The array's element type (a numpy dtype or something numpy accepts)."""
        ...

    def __getitem__(self, key: Any) -> Any: ...


@dataclass
class LabelSpec:
    """A label image to store beside the image: integer mask + what each value means.

    ``names`` maps label values to names (e.g. ``{1: "liver", 2: "liver tumour"}``),
    ``colors`` to RGBA tuples, ``properties`` to extra JSON-able facts (codes, source).
    """

    data: ArrayLike
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    properties: dict[int, dict[str, Any]] = field(default_factory=dict)


def _check_path(path: str) -> str:
    clean = path.strip("/")
    if not clean.endswith(SUFFIX) or clean == SUFFIX:
        raise InvalidInput(f"image paths must end in {SUFFIX!r}, got {path!r}")
    if any(part in ("", ".", "..") for part in clean.split("/")):
        raise InvalidInput(f"invalid image path {path!r}")
    return clean


def _check_name(kind: str, name: str) -> None:
    if not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise InvalidInput(f"invalid {kind} name {name!r}")


def _slabs(n: int, step: int) -> Iterator[slice]:
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _read_block(data: ArrayLike, key: tuple[slice, ...]) -> np.ndarray:
    block = data[key]
    compute = getattr(block, "compute", None)
    if callable(compute):
        block = compute()
    return np.ascontiguousarray(np.asarray(block))


class _LevelWriter:
    """Creates the arrays of one multiscale group and fills them level by level."""

    def __init__(
        self,
        store: Store,
        group_path: str,
        axes: str,
        dtype: np.dtype[Any],
        plan: list[PlannedLevel],
        layout: Layout,
        n_channels: int,
        method: str,
    ) -> None:
        self.zstore = store.zarr_store()
        self.group_path = group_path
        self.axes = axes
        self.dtype = dtype
        self.plan = plan
        self.layout = layout
        self.n_channels = n_channels
        self.method = method
        self.arrays: list[zarr.Array] = []
        #: shard slabs written at once: on object stores a second slab hides request latency;
        #: locally zarr already spreads one shard's chunks over the cores, and more slabs in
        #: flight only add memory (measured: no speed-up, up to 2x peak RSS)
        self.inflight = 2 if store.is_remote else 1
        self.grids: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def _full(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        return (self.n_channels, *spatial) if self.axes.startswith("c") else spatial

    def create(self) -> None:
        names = list(self.axes)
        for i, lv in enumerate(self.plan):
            chunks, shards = self.layout.resolve(lv.shape)
            arr = zarr.create_array(
                self.zstore,
                name=f"{self.group_path}/{i}",
                shape=self._full(lv.shape),
                dtype=self.dtype,
                chunks=self._full(chunks) if not self.axes.startswith("c") else (1, *chunks),
                shards=self._full(shards) if not self.axes.startswith("c") else (1, *shards),
                compressors=self.layout.codecs(self.dtype.itemsize),
                fill_value=0,
                dimension_names=names,
                zarr_format=3,
                overwrite=True,
            )
            self.arrays.append(arr)
            self.grids.append((chunks, shards))

    def write_level0(self, data: ArrayLike, stats: _Stats) -> None:
        arr = self.arrays[0]
        shard_depth = self.grids[0][1][0]
        first = self.plan[0].shape[0]
        with _BoundedWrites(self.inflight) as writes:
            for sl in _slabs(first, shard_depth):
                for c in range(self.n_channels):
                    key: tuple[Any, ...] = (c, sl) if self.axes.startswith("c") else (sl,)
                    block = _read_block(data, key)
                    if block.dtype != self.dtype:
                        block = block.astype(self.dtype)
                    stats.update(block)
                    writes.submit(arr.__setitem__, key, block)

    def write_pyramid(self) -> None:
        down = downsample_mean if self.method == "mean" else downsample_mode
        for i in range(1, len(self.plan)):
            src, dst = self.arrays[i - 1], self.arrays[i]
            step = self.plan[i].step
            depth = self.grids[i][1][0]
            writes = _BoundedWrites(self.inflight)
            for sl in _slabs(self.plan[i].shape[0], depth):
                src_sl = slice(
                    sl.start * step[0], min(self.plan[i - 1].shape[0], sl.stop * step[0])
                )
                for c in range(self.n_channels):
                    src_key: tuple[Any, ...] = (
                        (c, src_sl) if self.axes.startswith("c") else (src_sl,)
                    )
                    dst_key: tuple[Any, ...] = (c, sl) if self.axes.startswith("c") else (sl,)
                    block = np.asarray(src[src_key])
                    writes.submit(dst.__setitem__, dst_key, down(block, step))
            writes.close()  # level i is complete before level i + 1 reads it

    def levels(
        self, scale0: tuple[float, ...], translation0: tuple[float, ...]
    ) -> tuple[LevelInfo, ...]:
        out = []
        chan = (1,) if self.axes.startswith("c") else ()
        for i, (lv, arr, (chunks, shards)) in enumerate(
            zip(self.plan, self.arrays, self.grids, strict=True)
        ):
            scale = tuple(s * f for s, f in zip(scale0, lv.factors, strict=True))
            trans = tuple(
                t + (f - 1) / 2 * s
                for t, f, s in zip(translation0, lv.factors, scale0, strict=True)
            )
            out.append(
                LevelInfo(
                    path=str(i),
                    shape=tuple(arr.shape),
                    chunks=(*chan, *chunks),
                    shards=(*chan, *shards),
                    scale=(*((1.0,) if chan else ()), *scale),
                    translation=(*((0.0,) if chan else ()), *trans),
                    factors=(*chan, *lv.factors),
                )
            )
        return tuple(out)


class _BoundedWrites:
    """Runs slab writes in background threads, at most ``limit`` at a time, in order.

    Encoding a shard is CPU-bound; with one slab in flight a core idles while the next slab is
    read or downsampled. Errors surface on the next submit or on close.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="atlas-write")
        self.pending: deque[Future[Any]] = deque()

    def submit(self, fn: Any, *args: Any) -> None:
        while len(self.pending) >= self.limit:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(fn, *args))

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True)

    def __enter__(self) -> _BoundedWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stats:
    """Running min/max (ignoring NaN) and, for labels, voxel counts per value."""

    def __init__(self, count_values: bool) -> None:
        self.lo = math.inf
        self.hi = -math.inf
        self.counts: dict[int, int] = {}
        self.count_values = count_values

    def update(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        if block.dtype.kind == "f":
            finite = block[np.isfinite(block)]
            if finite.size:
                self.lo = min(self.lo, float(finite.min()))
                self.hi = max(self.hi, float(finite.max()))
        else:
            self.lo = min(self.lo, float(block.min()))
            self.hi = max(self.hi, float(block.max()))
        if self.count_values:
            if block.dtype in (np.uint8, np.uint16):  # labels: a histogram, no sort
                hist = np.bincount(block.ravel(), minlength=1)
                values = np.nonzero(hist)[0]
                counts = hist[values]
            else:
                values, counts = np.unique(block, return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist(), strict=True):
                self.counts[int(v)] = self.counts.get(int(v), 0) + int(n)

    @property
    def value_range(self) -> tuple[float, float]:
        return (self.lo, self.hi) if self.lo <= self.hi else (0.0, 0.0)


def _status_doc(status: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"atlas": {"format": ATLAS_FORMAT, "status": status, **(extra or {})}}


def _existing_status(store: Store, path: str) -> str | None:
    """``None`` if nothing is at ``path``; else the atlas status of what is there."""
    try:
        raw = store.read_bytes(f"{path}/zarr.json")
    except NotFound:
        return None if not store.list(f"{path}/") else STATUS_WRITING
    try:
        attrs = json.loads(raw).get("attributes", {})
    except ValueError:
        return STATUS_WRITING
    status = attrs.get("atlas", {}).get("status")
    if status == STATUS_COMPLETE or (status is None and "ome" in attrs):
        return STATUS_COMPLETE
    return STATUS_WRITING


def write_image(
    store: Store | str,
    path: str,
    data: ArrayLike,
    *,
    spacing: tuple[float, ...] | list[float],
    origin: tuple[float, float, float] | list[float] | None = None,
    direction: Any = None,
    axes: str | None = None,
    name: str | None = None,
    modality: str | None = None,
    windows: tuple[WindowPreset, ...] | None = None,
    labels: Mapping[str, LabelSpec] | None = None,
    layout: Layout | None = None,
    pyramid_target: int = 256,
    max_levels: int | None = None,
    extra_attributes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    slice_step: Sequence[float] | None = None,
) -> Any:
    """Write ``data`` as an OME-Zarr v0.5 image at ``path`` (which must end in ``.ome.zarr``).

    Parameters
    ----------
    store:
        A :class:`atlas.storage.Store` or a store URL.
    data:
        numpy, dask or zarr array; 2-D ``yx``, 3-D ``zyx``, or with a leading channel axis.
    spacing:
        Voxel size in millimetres per *spatial* array axis (``(z, y, x)`` or ``(y, x)``).
    origin:
        Patient-space (LPS) position in mm of the centre of voxel 0 (default 0, 0, 0).
    direction:
        3 x n_spatial direction cosines; column ``a`` is the LPS unit vector of spatial axis
        ``a`` in array order (default: array x, y, z along patient x, y, z). The OME
        ``translation`` of level 0 is ``origin`` in z, y, x (S, P, L) order, voxel 0's
        patient position (:func:`atlas.ome.metadata.ome_translation`).
    axes:
        ``"zyx"``, ``"yx"``, ``"czyx"`` or ``"cyx"``; inferred from ``data.ndim`` when omitted.
    modality:
        DICOM modality; ``"CT"`` selects the CT window presets.
    labels:
        Label images by name; each must have the image's spatial shape and an integer dtype.
    layout:
        Chunk/shard shapes and compression (:class:`Layout`).
    slice_step:
        For a sheared 3-D stack (gantry tilt): the LPS step in mm from voxel ``(k, 0, 0)`` to
        ``(k + 1, 0, 0)``. Its component along the slice normal (``direction`` column 0) must
        equal ``spacing[0]``; ``atlas.affine`` then has it as its first column and records
        ``sheared: true`` and ``tilt_deg``, while ``direction`` stays orthonormal and the OME
        transforms keep the z scale along the normal (OME cannot express shear).
    overwrite:
        Replace a complete image at ``path``. Without it, :class:`AlreadyExists` is raised.
        Leftovers of an interrupted write are always replaced.

    Returns
    -------
    atlas.ome.OmeImage
        The image, opened from what was written.
    """
    from atlas.ome.reader import open_image

    st = open_store(store) if isinstance(store, str) else store
    path = _check_path(path)
    layout = layout or Layout()
    shape = tuple(int(n) for n in data.shape)
    if axes is None:
        if len(shape) not in (2, 3):
            raise InvalidInput(
                f"data has {len(shape)} dimensions; pass axes='czyx' or 'cyx' for channel images"
            )
        axes = "yx" if len(shape) == 2 else "zyx"
    axis_objs = make_axes(axes)
    if len(shape) != len(axes):
        raise InvalidInput(f"data has {len(shape)} dimensions but axes {axes!r} has {len(axes)}")
    if any(n < 1 for n in shape):
        raise InvalidInput(f"data shape {shape} has an empty dimension")
    dtype = np.dtype(data.dtype)
    if dtype.name not in IMAGE_DTYPES:
        raise InvalidInput(f"unsupported image dtype {dtype}; supported: {', '.join(IMAGE_DTYPES)}")
    spatial = shape[1:] if axes.startswith("c") else shape
    n_channels = shape[0] if axes.startswith("c") else 1
    n_sp = len(spatial)
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != n_sp or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise InvalidInput(
            f"spacing must be {n_sp} positive finite numbers (mm per "
            f"{''.join(axes[-n_sp:])} axis), got {tuple(spacing)}"
        )
    origin_t = tuple(float(o) for o in (origin if origin is not None else (0.0, 0.0, 0.0)))
    if len(origin_t) != 3 or not all(math.isfinite(o) for o in origin_t):
        raise InvalidInput(f"origin must be 3 finite numbers (LPS mm), got {origin!r}")
    dmat = check_direction(default_direction(n_sp) if direction is None else direction, n_sp)
    shear = check_slice_step(slice_step, spacing_t, dmat)
    label_specs = dict(labels or {})
    for lname, spec in label_specs.items():
        _check_name("label", lname)
        ldt = np.dtype(spec.data.dtype)
        if ldt.name not in LABEL_DTYPES:
            raise InvalidInput(
                f"label {lname!r} has dtype {ldt}; labels need an integer dtype "
                f"({', '.join(LABEL_DTYPES)})"
            )
        if tuple(spec.data.shape) != spatial:
            raise InvalidInput(
                f"label {lname!r} has shape {tuple(spec.data.shape)} but the image's spatial "
                f"shape is {spatial}"
            )
    layout.resolve(spatial)  # validates dimensionality early
    reserved = ATLAS_KEYS & set(extra_attributes or {})
    if reserved:
        raise InvalidInput(f"extra_attributes may not replace Atlas's own keys {sorted(reserved)}")
    name = name or path.rsplit("/", 1)[-1][: -len(SUFFIX)]
    if windows is None:
        windows = CT_WINDOWS if (modality or "").upper() == "CT" else ()

    st.ensure_reachable(create=True)
    status = _existing_status(st, path)
    if status == STATUS_COMPLETE and not overwrite:
        raise AlreadyExists(
            f"an image already exists at {st.url}/{path}; pass overwrite=True to replace it",
            site=st.site,
            location=st.url,
        )
    if status is not None:
        st.write_bytes(f"{path}/zarr.json", _group_doc(_status_doc(STATUS_WRITING)))
        _clear(st, path)
    plan = plan_levels(spatial, spacing_t, target=pyramid_target, max_levels=max_levels)
    try:
        st.write_bytes(f"{path}/zarr.json", _group_doc(_status_doc(STATUS_WRITING)))
        image_w = _LevelWriter(st, path, axes, dtype, plan, layout, n_channels, "mean")
        image_w.create()
        stats = _Stats(count_values=False)
        image_w.write_level0(data, stats)
        image_w.write_pyramid()
        translation0 = ome_translation(origin_t, n_sp)
        levels = image_w.levels(spacing_t, translation0)
        label_infos = [
            _write_label(st, path, lname, spec, plan, layout, spacing_t, translation0)
            for lname, spec in label_specs.items()
        ]
        if label_infos:
            st.write_bytes(
                f"{path}/labels/zarr.json",
                _group_doc({"ome": {"version": OME_VERSION, "labels": list(label_specs)}}),
            )
        affine = affine_matrix(spacing_t, origin_t, dmat)
        if shear is not None:
            affine[:3, 0] = shear[0]
        mid = plan[0].shape[0] // 2 if n_sp == 3 else 0
        attrs = {
            "ome": {
                "version": OME_VERSION,
                "multiscales": multiscales_json(name, axis_objs, levels, "mean"),
                "omero": omero_json(name, windows, stats.value_range, n_channels, mid),
            },
            **_status_doc(
                STATUS_COMPLETE,
                {
                    "name": name,
                    "modality": modality,
                    "spacing": list(spacing_t),
                    "origin": list(origin_t),
                    "direction": dmat.tolist(),
                    "affine": affine.tolist(),
                    "windows": [
                        {"name": w.name, "center": w.center, "width": w.width} for w in windows
                    ],
                    "value_range": list(stats.value_range),
                    "labels": {
                        info.name: {
                            "voxel_counts": {str(k): v for k, v in info.voxel_counts.items()}
                        }
                        for info in label_infos
                    },
                    "layout": layout.to_dict(),
                    "levels": [
                        {"path": lv.path, "shape": list(lv.shape), "shards": list(lv.shards)}
                        for lv in levels
                    ],
                    **({"sheared": True, "tilt_deg": shear[1]} if shear is not None else {}),
                    **dict(extra_attributes or {}),
                },
            ),
        }
        # The commit point: until this object is written, the image does not look complete.
        st.write_bytes(f"{path}/zarr.json", _group_doc(attrs))
    except BaseException:
        _clear(st, path, keep_marker=False)
        raise
    return open_image(st, path)


def _write_label(
    st: Store,
    image_path: str,
    lname: str,
    spec: LabelSpec,
    plan: list[PlannedLevel],
    layout: Layout,
    spacing: tuple[float, ...],
    translation0: tuple[float, ...],
) -> LabelInfo:
    lpath = f"{image_path}/labels/{lname}"
    n_sp = len(spacing)
    axes = "zyx"[-n_sp:]
    w = _LevelWriter(st, lpath, axes, np.dtype(spec.data.dtype), plan, layout, 1, "mode")
    w.create()
    stats = _Stats(count_values=True)
    w.write_level0(spec.data, stats)
    w.write_pyramid()
    levels = w.levels(spacing, translation0)
    info = LabelInfo(
        name=lname,
        names=dict(spec.names),
        colors=dict(spec.colors),
        properties=dict(spec.properties),
        voxel_counts={k: v for k, v in sorted(stats.counts.items()) if k != 0},
    )
    ij = label_json(info)
    for v in info.voxel_counts:
        if v not in {p["label-value"] for p in ij["properties"]}:
            ij["properties"].append({"label-value": v})
            ij["colors"].append({"label-value": v, "rgba": list(default_color(v))})
    for p in ij["properties"]:
        p["voxel-count"] = info.voxel_counts.get(p["label-value"], 0)
    doc = {
        "ome": {
            "version": OME_VERSION,
            "multiscales": multiscales_json(lname, make_axes(axes), levels, "mode"),
            "image-label": ij,
        }
    }
    st.write_bytes(f"{lpath}/zarr.json", _group_doc(doc))
    return info


def _group_doc(attributes: Mapping[str, Any]) -> bytes:
    doc = {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}
    return json.dumps(doc, indent=2, allow_nan=False).encode()


def _clear(st: Store, path: str, keep_marker: bool = True) -> None:
    """Delete everything under ``path`` except (optionally) its ``zarr.json`` marker."""
    marker = f"{path}/zarr.json"
    keys = [k for k in st.list(f"{path}/") if not (keep_marker and k == marker)]
    # Delete the marker last so a crash mid-cleanup still leaves an 'incomplete' image.
    st.delete_many([k for k in keys if k != marker])
    if marker in keys:
        st.delete(marker)
    if not keep_marker:
        st.prune_empty_dirs(path)
