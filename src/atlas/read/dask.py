"""Dask arrays of Atlas images, one chunk per shard, that read on any worker.

:func:`to_dask` turns a list of :class:`ImageRef` (typically from a catalog query, through
:func:`refs_from_rows`) into one lazy ``dask.array.Array`` per image. Each dask chunk is one
*shard* of the level (the object a store holds, several MB), not one of the small inner chunks
a patch read uses: a task then costs one object GET and decodes the shard's inner chunks
together, and a 512 x 512 x 300 CT becomes a handful of tasks instead of hundreds (decision
0045 measures both).

The graph holds, per image, one small picklable source: the site's :class:`~atlas.storage.Store`
(which pickles as its location — endpoint, bucket, and the *names* of the environment
variables holding the keys, never the keys) plus the image path, level, shape and dtype. A
worker that unpickles it opens the image on first use, reads the keys from its own
environment (decision 0005), and keeps the opened level for the later tasks it runs. A chunk
that fails its checksum raises :class:`~atlas.errors.CorruptData` on the worker, naming the
image, level, inner chunk and shard object; dask re-raises it in the client.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from atlas.errors import AtlasError, InvalidInput, NotFound
from atlas.ome import LevelInfo, OmeImage, OmeLabel, open_image
from atlas.storage import Store

__all__ = ["ImageRef", "credential_variables", "refs_from_rows", "to_dask"]

#: most images whose metadata :func:`to_dask` opens at once (each open is a few small GETs)
_OPEN_CONCURRENCY = 16


@dataclass(frozen=True)
class ImageRef:
    """One image, or one of its label images, on one site.

    Parameters
    ----------
    site
        Key into the ``stores`` mapping.
    path
        The image's path in that store, e.g. ``"liver-ct/<subject>/<series>.ome.zarr"``.
    label
        Name of a label image under ``<path>/labels/``, or ``None`` for the image itself.
    """

    site: str
    path: str
    label: str | None = None

    def __post_init__(self) -> None:
        for name in ("site", "path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip("/"):
                raise InvalidInput(f"ImageRef.{name} must be a non-empty string, got {value!r}")
        object.__setattr__(self, "path", self.path.strip("/"))

    def __str__(self) -> str:
        label = f" label {self.label!r}" if self.label else ""
        return f"{self.site}:{self.path}{label}"


class _ShardSource:
    """One level of one image as a sliceable, picklable object for ``dask.array.from_array``.

    Pickles as the opened image's metadata (its :class:`~atlas.storage.Store` pickles as its
    location, without keys) plus the level, shape and dtype. Unpickled in a worker, the store
    is swapped for the one handle that process keeps per location (:func:`_shared_store`), so
    its S3 clients are built once per worker, not once per image.
    """

    def __init__(
        self, node: OmeImage | OmeLabel, level: int, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> None:
        self.node = node
        self.level = level
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)
        self._array: Any = None  # the level opened with zarr-python, once per process

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_source, (self.node, self.level, self.shape, self.dtype))

    def __dask_tokenize__(self) -> Any:
        node = self.node
        return ("atlas-shards", node.store.url, node.path, self.level, self.shape, self.dtype.str)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if self._array is None:
            self._array = self.node.array(self.level)
        try:
            return np.asarray(self._array[key])
        except AtlasError:
            raise
        except Exception:
            # a checksum or decode failure: read again through the image, which names the
            # damaged chunk and its shard object (CorruptData), or succeeds if it was transient
            return self.node.read(self.level, key)


#: one Store per distinct pickled location in this process (worker side of :class:`_ShardSource`)
_STORES: dict[bytes, Store] = {}
_STORES_LOCK = threading.Lock()


def _shared_store(store: Store) -> Store:
    """The handle this process keeps for ``store``'s location and options (first one seen)."""
    key = pickle.dumps(store)  # the location, retry, latency and fault settings; no keys
    with _STORES_LOCK:
        return _STORES.setdefault(key, store)


def _rebuild_source(
    node: OmeImage | OmeLabel, level: int, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> _ShardSource:
    node = replace(node, store=_shared_store(node.store))
    return _ShardSource(node, level, shape, dtype)


def _open(store: Store, ref: ImageRef) -> OmeImage | OmeLabel:
    image = open_image(store, ref.path)
    return image.label(ref.label) if ref.label is not None else image


def _level(node: OmeImage | OmeLabel, ref: ImageRef, level: int) -> LevelInfo:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < len(node.levels):
        raise InvalidInput(
            f"image {ref} has levels 0..{len(node.levels) - 1}, not {level!r}", site=ref.site
        )
    return node.levels[level]


def _store_of(stores: Mapping[str, Store], ref: ImageRef) -> Store:
    if not isinstance(ref, ImageRef):
        raise InvalidInput(f"to_dask takes ImageRef values, got {ref!r}")
    try:
        return stores[ref.site]
    except KeyError:
        raise NotFound(
            f"unknown site {ref.site!r} for image {ref.path!r}; known sites: "
            f"{', '.join(sorted(stores)) or 'none'}",
            site=ref.site,
        ) from None


def to_dask(stores: Mapping[str, Store], refs: Sequence[ImageRef], level: int = 0) -> list[Any]:
    """One dask array per image of ``refs``, chunked along the level's shards.

    Parameters
    ----------
    stores
        Site name -> :class:`~atlas.storage.Store` (e.g. ``{s.name: s.store() for s in
        load_sites(...)}``).
    refs
        The images (or label images) to wrap, e.g. from :func:`refs_from_rows`.
    level
        Pyramid level (0 = full resolution); must exist in every image.

    Returns
    -------
    list of dask.array.Array
        ``arrays[i]`` is ``refs[i]`` at ``level``: its shape and dtype, chunks equal to the
        level's shard shape (smaller at the far edges). Nothing is read until computed.

    Raises
    ------
    NotFound
        A ref names a site not in ``stores``, or an image or label that does not exist.
    InvalidInput
        ``level`` is out of range for an image (before any pixel is read).
    """
    import dask.array as da

    refs = list(refs)
    checked = [_store_of(stores, ref) for ref in refs]  # unknown sites fail before any I/O
    workers = max(1, min(_OPEN_CONCURRENCY, len(refs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        nodes = list(pool.map(_open, checked, refs))
    arrays = []
    for ref, node in zip(refs, nodes, strict=True):
        info = _level(node, ref, level)
        dtype = node.array(level).dtype
        source = _ShardSource(node, level, tuple(info.shape), dtype)
        arrays.append(
            da.from_array(
                source,
                chunks=tuple(min(s, n) for s, n in zip(info.shards, info.shape, strict=True)),
                name=f"atlas-{da.core.tokenize(source)}",
                asarray=True,
                fancy=False,
                meta=np.empty((0,) * len(info.shape), dtype=dtype),
            )
        )
    return arrays


def refs_from_rows(rows: Any, *, label: str | None = None) -> list[ImageRef]:
    """The distinct images of a catalog result, in the order they first appear.

    Parameters
    ----------
    rows
        A catalog :class:`~atlas.index.catalog.Query` (e.g. ``atlas.series.where(...)``;
        only its ``site`` and ``image_path`` columns are fetched), a query
        :class:`~atlas.index.catalog.Result`, a pyarrow Table, or an iterable of mappings —
        anything whose rows carry ``site`` and ``image_path``. Rows of the ``images`` or
        ``annotations`` table name the same volume many times; each volume is returned once.
    label
        Name of the label image to refer to instead of the image itself.

    Returns
    -------
    list of ImageRef

    Raises
    ------
    InvalidInput
        The rows lack a ``site`` or ``image_path`` column, or a value is empty.
    """
    if hasattr(rows, "select") and hasattr(rows, "to_arrow"):  # a catalog Query
        rows = rows.select("site", "image_path").to_arrow()
    if hasattr(rows, "missing_sites") and hasattr(rows, "value"):  # a catalog Result
        rows = rows.value
    if rows is None:  # a result with no rows
        return []
    if hasattr(rows, "column_names") and hasattr(rows, "column"):  # a pyarrow Table
        missing = [c for c in ("site", "image_path") if c not in rows.column_names]
        if missing:
            raise InvalidInput(
                f"rows need the columns site and image_path; missing {missing} "
                f"(have {rows.column_names})"
            )
        pairs: Iterable[tuple[Any, Any]] = zip(
            rows.column("site").to_pylist(), rows.column("image_path").to_pylist(), strict=True
        )
    else:
        pairs = (_pair(row) for row in rows)
    seen: dict[tuple[str, str], None] = {}
    for site, path in pairs:
        seen.setdefault((site, path), None)
    return [ImageRef(site, path, label) for site, path in seen]


def _pair(row: Any) -> tuple[Any, Any]:
    try:
        return row["site"], row["image_path"]
    except (KeyError, TypeError, IndexError):
        raise InvalidInput(
            f"each row needs 'site' and 'image_path' (a mapping), got {row!r}"
        ) from None


def credential_variables(stores: Iterable[Store]) -> tuple[str, ...]:
    """Names of the environment variables worker processes need to read ``stores``.

    Workers read each site's keys from their own environment under the names its location
    gives (``key_env``, ``secret_env``); this lists them (sorted, once each) so a cluster's
    worker environment can be set up. It returns names only, never values.
    """
    names: set[str] = set()
    for store in stores:
        loc = store.location
        if store.uses_credentials and not loc.anonymous:
            names.update(n for n in (loc.key_env, loc.secret_env) if n)
    return tuple(sorted(names))
