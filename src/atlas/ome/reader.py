"""Open an OME-Zarr v0.5 image written by Atlas (or any tool) and read it safely.

:func:`open_image` returns an :class:`OmeImage`: typed metadata plus each level as a zarr
array, a tensorstore handle or a dask array. :meth:`OmeImage.read` turns a checksum or decode
failure into :class:`atlas.errors.CorruptData` naming the level, the chunk and the store object.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from atlas.errors import AtlasError, CorruptData, IncompleteImage, InvalidInput, NotFound
from atlas.ome.metadata import (
    ATLAS_KEYS,
    STATUS_COMPLETE,
    Axis,
    ImageMetadata,
    LabelInfo,
    LevelInfo,
    WindowPreset,
    affine_matrix,
    default_direction,
)
from atlas.storage import Store, open_store, parse_json_object

Region = tuple[slice, ...]


def _load_group_attrs(store: Store, path: str) -> dict[str, Any]:
    try:
        raw = store.read_bytes(f"{path}/zarr.json")
    except NotFound:
        if store.list(f"{path}/"):
            raise IncompleteImage(
                f"image {path!r} in {store.url} is incomplete (its write was interrupted); "
                "write it again to replace the leftovers",
                site=store.site,
                location=store.url,
            ) from None
        raise NotFound(
            f"no image at {path!r} in {store.url}", site=store.site, location=store.url
        ) from None
    what = f"metadata {path}/zarr.json in {store.url}"
    doc = parse_json_object(raw, what, site=store.site, location=store.url)
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise InvalidInput(f"{path!r} in {store.url} is not a zarr v3 group")
    attrs: dict[str, Any] = doc.get("attributes", {})
    return attrs


def _parse_levels(store: Store, path: str, ms: dict[str, Any]) -> tuple[LevelInfo, ...]:
    levels = []
    base_scale: list[float] | None = None
    for ds in ms["datasets"]:
        scale: list[float] = []
        translation: list[float] = []
        for t in ds.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                scale = [float(v) for v in t["scale"]]
            elif t.get("type") == "translation":
                translation = [float(v) for v in t["translation"]]
        meta = json.loads(store.read_bytes(f"{path}/{ds['path']}/zarr.json"))
        shape = tuple(int(n) for n in meta["shape"])
        outer = tuple(int(n) for n in meta["chunk_grid"]["configuration"]["chunk_shape"])
        inner = outer
        for codec in meta.get("codecs", []):
            if codec.get("name") == "sharding_indexed":
                inner = tuple(int(n) for n in codec["configuration"]["chunk_shape"])
        base_scale = base_scale or scale
        factors = tuple(
            max(1, round(s / b)) if b else 1 for s, b in zip(scale, base_scale, strict=True)
        )
        levels.append(
            LevelInfo(
                path=str(ds["path"]),
                shape=shape,
                chunks=inner,
                shards=outer,
                scale=tuple(scale),
                translation=tuple(translation or [0.0] * len(shape)),
                factors=factors,
            )
        )
    return tuple(levels)


@dataclass(frozen=True)
class _Node:
    store: Store
    path: str
    levels: tuple[LevelInfo, ...]

    def array(self, level: int = 0) -> zarr.Array:
        """Level ``level`` as a read-only zarr-python array."""
        self._check_level(level)
        return zarr.open_array(
            self.store.zarr_store(), path=f"{self.path}/{self.levels[level].path}", mode="r"
        )

    def tensorstore(self, level: int = 0) -> Any:
        """Level ``level`` opened read-only with tensorstore (zarr3 driver)."""
        self._check_level(level)
        spec = {
            "driver": "zarr3",
            "kvstore": self.store.kvstore_spec(f"{self.path}/{self.levels[level].path}"),
        }
        return self.store.open_tensorstore(spec, read=True, open=True)

    def dask(self, level: int = 0) -> Any:
        """Level ``level`` as a dask array (one task per shard).

        Tasks pickle as the store handle plus the path (no credentials) and read through
        :meth:`read`, so a corrupted chunk raises :class:`CorruptData` on the worker too.
        """
        import dask.array as da

        self._check_level(level)
        info = self.levels[level]
        source = _LevelSource(self, level, info.shape, self.array(level).dtype)
        return da.from_array(source, chunks=info.shards, asarray=True, fancy=False)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < len(self.levels):
            raise NotFound(
                f"{self.path!r} has levels 0..{len(self.levels) - 1}, not {level}",
                site=self.store.site,
                location=self.store.url,
            )

    def read(self, level: int = 0, region: Region | None = None) -> np.ndarray:
        """Read ``region`` of a level as numpy; corrupted chunks raise :class:`CorruptData`."""
        arr = self.array(level)
        key = region if region is not None else tuple(slice(None) for _ in arr.shape)
        try:
            return np.asarray(arr[key])
        except AtlasError:
            raise
        except Exception as exc:
            raise self.locate_corruption(arr, level, key, exc) from exc

    def locate_corruption(
        self, arr: zarr.Array, level: int, key: Region, exc: Exception
    ) -> AtlasError:
        """The error to raise for ``exc``, a failed read of ``key`` at ``level``.

        Reads the inner chunks that ``key`` touches one at a time (with zarr-python) and
        names the first that fails: its chunk index and the shard object holding it, as
        :class:`CorruptData`. When every chunk reads on its own, a :class:`CorruptData`
        describing ``exc`` is returned. Used by every reader of Atlas images (this class and
        :mod:`atlas.read`), so a damaged chunk is reported the same way whichever engine
        found it.

        Parameters
        ----------
        arr
            The level opened with zarr-python (:meth:`array`).
        level
            The level index.
        key
            The slices that were read (one per axis, or fewer).
        exc
            The exception the read raised.

        Returns
        -------
        AtlasError
            The :class:`CorruptData` to raise (``raise ... from exc``).
        """
        info = self.levels[level]
        bounds = [s.indices(n) for s, n in zip(key, arr.shape, strict=False)]
        ranges = [
            range(start // c, (max(start, stop - 1)) // c + 1)
            for (start, stop, _), c in zip(bounds, info.chunks, strict=False)
        ]
        for idx in itertools.product(*ranges):
            sl = tuple(
                slice(i * c, min(n, (i + 1) * c))
                for i, c, n in zip(idx, info.chunks, arr.shape, strict=True)
            )
            try:
                arr[sl]
            except Exception:
                shard = tuple(
                    i * c // s for i, c, s in zip(idx, info.chunks, info.shards, strict=True)
                )
                obj = f"{self.path}/{info.path}/c/" + "/".join(map(str, shard))
                return CorruptData(
                    f"corrupted data in {self.path!r} level {level}: chunk {idx} (inner chunk "
                    f"of shard object {obj!r}) fails its checksum or cannot be decoded; other "
                    "chunks are still readable. Restore that object or write the image again.",
                    site=self.store.site,
                    location=self.store.url,
                )
        return CorruptData(
            f"could not read {self.path!r} level {level}: {type(exc).__name__}: {exc}",
            site=self.store.site,
            location=self.store.url,
        )


@dataclass(frozen=True)
class _LevelSource:
    """A picklable, sliceable view of one level for :func:`dask.array.from_array`."""

    node: _Node
    level: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Region) -> np.ndarray:
        return self.node.read(self.level, key)


@dataclass(frozen=True)
class OmeLabel(_Node):
    """One label image of an :class:`OmeImage`."""

    info: LabelInfo


@dataclass(frozen=True)
class OmeImage(_Node):
    """An opened OME-Zarr image: typed metadata and access to each level and label."""

    metadata: ImageMetadata

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the label images stored under ``labels/``."""
        return self.metadata.labels

    def label(self, name: str) -> OmeLabel:
        """Open the label image ``name``."""
        if name not in self.metadata.labels:
            raise NotFound(
                f"image {self.path!r} has no label {name!r}; it has {list(self.metadata.labels)}",
                site=self.store.site,
                location=self.store.url,
            )
        lpath = f"{self.path}/labels/{name}"
        attrs = _load_group_attrs(self.store, lpath)
        ome = attrs.get("ome", {})
        ms = ome["multiscales"][0]
        il = ome.get("image-label", {})
        names = {
            int(p["label-value"]): str(p["name"]) for p in il.get("properties", []) if "name" in p
        }
        colors = {int(c["label-value"]): tuple(c["rgba"]) for c in il.get("colors", [])}
        props = {
            int(p["label-value"]): {k: v for k, v in p.items() if k not in ("label-value", "name")}
            for p in il.get("properties", [])
        }
        counts = {
            int(p["label-value"]): int(p["voxel-count"])
            for p in il.get("properties", [])
            if p.get("voxel-count")
        }
        info = LabelInfo(name, names, colors, props, counts)
        return OmeLabel(self.store, lpath, _parse_levels(self.store, lpath, ms), info)


def open_image(store: Store | str, path: str) -> OmeImage:
    """Open the image at ``path``; refuses incomplete images with :class:`IncompleteImage`."""
    st = open_store(store) if isinstance(store, str) else store
    path = path.strip("/")
    attrs = _load_group_attrs(st, path)
    atlas_attrs = attrs.get("atlas", {})
    ome = attrs.get("ome")
    if atlas_attrs.get("status", STATUS_COMPLETE) != STATUS_COMPLETE or not ome:
        raise IncompleteImage(
            f"image {path!r} in {st.url} is incomplete (status "
            f"{atlas_attrs.get('status', 'no OME metadata')!r}); its write was interrupted or is "
            "still running — write it again to replace the leftovers",
            site=st.site,
            location=st.url,
        )
    if ome.get("version") != "0.5" or not ome.get("multiscales"):
        raise InvalidInput(f"{path!r} in {st.url} is not an OME-Zarr v0.5 image")
    ms = ome["multiscales"][0]
    axes = tuple(Axis(a["name"], a.get("type", "space"), a.get("unit")) for a in ms["axes"])
    levels = _parse_levels(st, path, ms)
    n_sp = sum(1 for a in axes if a.type == "space")
    spacing = tuple(atlas_attrs.get("spacing") or levels[0].scale[-n_sp:])
    origin = tuple(atlas_attrs.get("origin") or (0.0, 0.0, 0.0))
    direction = np.asarray(atlas_attrs.get("direction") or default_direction(n_sp))
    affine = (
        np.asarray(atlas_attrs["affine"])
        if "affine" in atlas_attrs
        else affine_matrix(spacing, origin, direction)
    )
    windows = tuple(
        WindowPreset(w["name"], float(w["center"]), float(w["width"]))
        for w in atlas_attrs.get("windows", [])
    )
    label_names: tuple[str, ...] = ()
    if st.exists(f"{path}/labels/zarr.json"):
        ldoc = json.loads(st.read_bytes(f"{path}/labels/zarr.json"))
        label_names = tuple(ldoc.get("attributes", {}).get("ome", {}).get("labels", []))
    vr = atlas_attrs.get("value_range")
    dtype = json.loads(st.read_bytes(f"{path}/{levels[0].path}/zarr.json"))["data_type"]
    meta = ImageMetadata(
        name=str(ms.get("name") or atlas_attrs.get("name") or path.rsplit("/", 1)[-1]),
        axes=axes,
        dtype=str(dtype),
        levels=levels,
        spacing=tuple(float(s) for s in spacing),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        affine=affine,
        modality=atlas_attrs.get("modality"),
        windows=windows,
        labels=label_names,
        value_range=(float(vr[0]), float(vr[1])) if vr else None,
        layout=dict(atlas_attrs.get("layout", {})),
        extra={k: v for k, v in atlas_attrs.items() if k not in ATLAS_KEYS},
    )
    return OmeImage(st, path, levels, meta)


def find_incomplete(store: Store | str, prefix: str = "") -> list[str]:
    """Paths of ``*.ome.zarr`` images below ``prefix`` whose write never completed."""
    st = open_store(store) if isinstance(store, str) else store
    roots = set()
    for key in st.list(prefix):
        parts = key.split("/")
        for i, part in enumerate(parts):
            if part.endswith(".ome.zarr"):
                roots.add("/".join(parts[: i + 1]))
                break
    out = []
    for root in sorted(roots):
        try:
            open_image(st, root)
        except IncompleteImage:
            out.append(root)
    return out
