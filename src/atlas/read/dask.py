"""Dask arrays of Atlas images, one chunk per shard, that read on any worker.

:func:`to_dask` turns a list of :class:`ImageRef` (typically from a catalog query, through
:func:`refs_from_rows`) into one lazy ``dask.array.Array`` per image. Each dask chunk is one
*shard* of the level (the object a store holds, several MB), not one of the small inner chunks
a patch read uses: a task then costs one object GET and decodes the shard's inner chunks
together, and a 512 x 512 x 300 CT becomes a handful of tasks instead of hundreds (decision
0045 measures both).

Each task reads its shard with a :class:`~atlas.read.Reader` (tensorstore by default, or the
reader you pass). The graph holds, per image, one small picklable source: the reader (which
pickles as its stores and options; a :class:`~atlas.storage.Store` pickles as its location —
endpoint, bucket, and the *names* of the environment variables holding the keys, never the
keys) plus the :class:`~atlas.read.ImageRef`, level, shape and dtype. A worker that unpickles
it keeps one reader per distinct set of stores and options, opens each image on first use,
and reads the keys from its own environment (decision 0005). A chunk that fails its checksum
raises :class:`~atlas.errors.CorruptData` on the worker, naming the image, level, inner chunk
and shard object; dask re-raises it in the client.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.read.reader import Reader
from atlas.read.request import ImageRef, ReadRequest, Region
from atlas.storage import Store

__all__ = ["credential_variables", "refs_from_rows", "to_dask"]

#: most images whose metadata :func:`to_dask` opens at once (each open is a few small GETs)
_OPEN_CONCURRENCY = 16


class _ShardSource:
    """One level of one image as a sliceable, picklable object for ``dask.array.from_array``.

    Pickles as ``(reader, ref, level, shape, dtype)``; unpickled in a worker, the reader is
    swapped for the one that process keeps for the same stores and options
    (:func:`_shared_reader`), so its metadata and clients are built once per worker, not once
    per image.
    """

    def __init__(
        self, reader: Reader, ref: ImageRef, level: int, shape: tuple[int, ...], dtype: Any
    ) -> None:
        self.reader = reader
        self.ref = ref
        self.level = level
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.ndim = len(shape)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_source, (self.reader, self.ref, self.level, self.shape, self.dtype))

    def __dask_tokenize__(self) -> Any:
        url = self.reader.store(self.ref.site).url
        return ("atlas-shards", url, str(self.ref), self.level, self.shape, self.dtype.str)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        bounds = [k.indices(n) for k, n in zip(key, self.shape, strict=True)]
        region = Region(tuple(b[0] for b in bounds), tuple(b[1] for b in bounds))
        return self.reader.read(ReadRequest(self.ref, region, self.level)).data


#: one Reader per distinct pickled (stores, options) in this process (the worker side)
_READERS: dict[bytes, Reader] = {}
_READERS_LOCK = threading.Lock()


def _shared_reader(reader: Reader) -> Reader:
    """The reader this process keeps for ``reader``'s stores and options (first one seen)."""
    key = pickle.dumps(reader)  # store locations and reading options; never keys
    with _READERS_LOCK:
        return _READERS.setdefault(key, reader)


def _rebuild_source(
    reader: Reader, ref: ImageRef, level: int, shape: tuple[int, ...], dtype: Any
) -> _ShardSource:
    return _ShardSource(_shared_reader(reader), ref, level, shape, dtype)


def to_dask(
    stores: Mapping[str, Store] | Reader, refs: Sequence[ImageRef], level: int = 0
) -> list[Any]:
    """One dask array per image of ``refs``, chunked along the level's shards.

    Parameters
    ----------
    stores
        Site name -> :class:`~atlas.storage.Store` (e.g. ``{s.name: s.store() for s in
        load_sites(...)}``), read with a default :class:`~atlas.read.Reader`; or a reader
        (its engine, retry policy and cache size then apply on the workers too).
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
        A ref names a site the stores do not have, or an image or label that does not exist.
    InvalidInput
        A ref is not an :class:`~atlas.read.ImageRef`, or ``level`` is out of range for an
        image (before any pixel is read).
    """
    import dask.array as da
    from dask.base import tokenize

    reader = stores if isinstance(stores, Reader) else Reader(stores)
    refs = list(refs)
    for ref in refs:  # wrong types and unknown sites fail before any I/O
        if not isinstance(ref, ImageRef):
            raise InvalidInput(f"to_dask takes ImageRef values, got {ref!r}")
        reader.store(ref.site)
    workers = max(1, min(_OPEN_CONCURRENCY, len(refs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(pool.map(reader.info, refs))
    arrays = []
    for ref, info in zip(refs, infos, strict=True):
        lv = info.level(level)
        shape = tuple(lv.shape)
        source = _ShardSource(reader, ref, level, shape, info.dtype)
        arrays.append(
            da.from_array(
                source,
                chunks=tuple(min(s, n) for s, n in zip(lv.shards, shape, strict=True)),
                name=f"atlas-{tokenize(source)}",
                asarray=True,
                fancy=False,
                meta=np.empty((0,) * len(shape), dtype=info.dtype),
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
