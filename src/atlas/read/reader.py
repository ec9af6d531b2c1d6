"""The :class:`Reader`: batched, concurrent region reads from the images of many sites.

A reader holds one :class:`~atlas.storage.Store` per site and reading options. It validates
every request against the image metadata before any pixel is read, groups the reads of each
site by shard, and reads the sites at once (one thread per site), each with its own in-flight
budget (:mod:`atlas.read.concurrency`). Results keep the order of the requests.

It pickles as its stores and options (stores pickle as their locations: names of credential
variables, never their values), holds no open handle until it is used, and so reopens lazily
in whichever process receives it (DataLoader workers, dask workers). Open arrays and the chunk
cache are per process and shared by every reader of that process.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from atlas.errors import InvalidInput, NotFound
from atlas.ome import OmeImage, OmeLabel, open_image
from atlas.read.concurrency import check_concurrency, in_flight_for
from atlas.read.engine import ReadEngine
from atlas.read.info import ImageInfo, Patch, image_info
from atlas.read.plan import PlannedRead, check_fill, out_dtype, plan_read, shard_groups
from atlas.read.request import Engine, ImageRef, OutOfBounds, ReadRequest, parse_enum
from atlas.storage import RetryPolicy, Store

__all__ = ["LATENCY_KEY", "Reader"]

#: the key a reader GETs to time a site's round trip (absent: one request, no payload)
LATENCY_KEY = ".atlas-latency-probe"


class Reader:
    """Read regions of images on many sites, many at a time.

    Parameters
    ----------
    stores
        One store per site name (the ``site`` of each :class:`ImageRef`).
    engine
        ``"tensorstore"`` (default) or ``"zarr"``; both return identical values.
        Process-local (``memory://``) stores are always read with zarr-python.
    out_of_bounds
        ``"pad"``: the part of a region outside the image is ``fill``; ``"raise"``: such a
        region is refused with :class:`~atlas.errors.InvalidInput`.
    fill
        The padding value of images (it must be exact in the output dtype). Label images
        are always padded with 0 (background: nothing outside an image is labelled).
    cache_bytes
        Size of the process's chunk cache (tensorstore engine; shared by the readers of a
        process that ask for the same size).
    concurrency
        Inner chunks in flight per site; ``None`` sizes it from each site's measured round
        trip (:func:`atlas.read.concurrency.in_flight_for`).
    retry
        Retry policy for reads that fail with :class:`~atlas.errors.StoreUnavailable`;
        ``None`` uses each store's own (``Store.retry``).
    """

    def __init__(
        self,
        stores: Mapping[str, Store],
        *,
        engine: Engine | str = Engine.TENSORSTORE,
        out_of_bounds: OutOfBounds | str = OutOfBounds.PAD,
        fill: float = 0,
        cache_bytes: int = 256 << 20,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(stores, Mapping) or not stores:
            raise InvalidInput(f"stores must map site names to Store handles, got {stores!r}")
        for site, store in stores.items():
            if not isinstance(site, str) or not isinstance(store, Store):
                raise InvalidInput(
                    f"stores must map site names (str) to Store handles; {site!r} -> "
                    f"{type(store).__name__}"
                )
        self.stores: dict[str, Store] = dict(stores)
        self.engine: Engine = parse_enum(Engine, engine, "engine")
        if self.engine is Engine.TENSORSTORE:
            for site, store in self.stores.items():
                if (store.latency or store.faults) and not store.process_local:
                    raise InvalidInput(
                        f"site {site!r}: the store injects latency or faults, which wrap its "
                        "zarr store only; tensorstore would not see them. Read it with "
                        "engine='zarr', or add latency at the network (a proxy)",
                        site=site,
                    )
        self.out_of_bounds: OutOfBounds = parse_enum(OutOfBounds, out_of_bounds, "out_of_bounds")
        check_fill(fill, np.dtype("float64"), "fill")
        self.fill = fill
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise InvalidInput(f"cache_bytes must be an integer >= 0, got {cache_bytes!r}")
        self.cache_bytes = cache_bytes
        self.concurrency = check_concurrency(concurrency)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidInput(f"retry must be a RetryPolicy or None, got {retry!r}")
        self.retry = retry
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.RLock()
        self._images: dict[tuple[str, str], OmeImage] = {}
        self._nodes: dict[ImageRef, OmeImage | OmeLabel] = {}
        self._infos: dict[ImageRef, ImageInfo] = {}
        self._in_flight: dict[str, int] = {}
        self._site_locks: dict[str, threading.Lock] = {}

    # -- pickling: stores and options only -------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The reader's options (what it pickles with its stores)."""
        return {
            "engine": self.engine.value,
            "out_of_bounds": self.out_of_bounds.value,
            "fill": self.fill,
            "cache_bytes": self.cache_bytes,
            "concurrency": self.concurrency,
            "retry": self.retry,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.stores, self.options()))

    def __repr__(self) -> str:
        return f"Reader(sites={sorted(self.stores)}, engine={self.engine.value!r})"

    # -- metadata ---------------------------------------------------------------------------
    def store(self, site: str) -> Store:
        """The store of ``site``; :class:`NotFound` naming it and the known sites."""
        try:
            return self.stores[site]
        except (KeyError, TypeError):
            raise NotFound(
                f"unknown site {site!r}; this reader has {sorted(self.stores)}", site=str(site)
            ) from None

    def node(self, ref: ImageRef) -> OmeImage | OmeLabel:
        """The opened image (or label image) of ``ref``, cached."""
        with self._lock:
            found = self._nodes.get(ref)
        if found is not None:
            return found
        store = self.store(ref.site)
        key = (ref.site, ref.path)
        with self._lock:
            image = self._images.get(key)
        if image is None:
            image = open_image(store, ref.path)
        node: OmeImage | OmeLabel = image if ref.label is None else image.label(ref.label)
        with self._lock:
            self._images.setdefault(key, image)
            return self._nodes.setdefault(ref, node)

    def info(self, ref: ImageRef) -> ImageInfo:
        """Shape, dtype, levels and affine of ``ref`` (one metadata read, then cached).

        Raises
        ------
        NotFound
            Unknown site, no image at the path, or no such label.
        InvalidInput
            ``ref`` is not an :class:`ImageRef`.
        """
        if not isinstance(ref, ImageRef):
            raise InvalidInput(f"expected an ImageRef, got {ref!r}")
        with self._lock:
            found = self._infos.get(ref)
        if found is not None:
            return found
        image = self.node(ImageRef(ref.site, ref.path))
        assert isinstance(image, OmeImage)
        info = image_info(ref, image)
        with self._lock:
            return self._infos.setdefault(ref, info)

    def opened(self) -> dict[ImageRef, tuple[OmeImage | OmeLabel, ImageInfo]]:
        """The images (and label images) this reader has opened and checked, by ref.

        Each comes with its :class:`ImageInfo`. They pickle as their store locations and
        metadata (no credential, no pixel), so a process that will read the same images
        can start with them (:meth:`add_opened`) instead of reading their metadata again.
        """
        with self._lock:
            return {r: (self._nodes[r], i) for r, i in self._infos.items() if r in self._nodes}

    def add_opened(self, opened: Mapping[ImageRef, tuple[OmeImage | OmeLabel, ImageInfo]]) -> None:
        """Take images opened elsewhere (see :meth:`opened`); ones already open here stay.

        Raises
        ------
        InvalidInput
            A key is not an :class:`ImageRef`, or a value not an opened image and its info.
        NotFound
            A ref's site is not one of this reader's.
        """
        for ref, value in opened.items():
            node, info = value if isinstance(value, tuple) and len(value) == 2 else (None, None)
            if (
                not isinstance(ref, ImageRef)
                or not isinstance(node, OmeImage | OmeLabel)
                or not isinstance(info, ImageInfo)
            ):
                raise InvalidInput(f"add_opened needs ImageRef -> (image, ImageInfo), got {ref!r}")
            self.store(ref.site)
        with self._lock:
            for ref, (node, info) in opened.items():
                self._nodes.setdefault(ref, node)
                self._infos.setdefault(ref, info)
                if ref.label is None and isinstance(node, OmeImage):
                    self._images.setdefault((ref.site, ref.path), node)

    def validate(self, request: ReadRequest) -> None:
        """Check ``request`` against its image (no pixel is read).

        Raises
        ------
        NotFound
            Unknown site, image or label.
        InvalidInput
            Level out of range, a region of the wrong rank, a region outside the image with
            ``out_of_bounds="raise"``, an unsafe dtype or a fill the dtype cannot hold.
        """
        self._plan(0, request)

    def _plan(self, index: int, request: ReadRequest) -> PlannedRead:
        if not isinstance(request, ReadRequest):
            raise InvalidInput(f"expected a ReadRequest, got {request!r}")
        fill = self._fill(request)
        return plan_read(index, request, self.info(request.image), self.out_of_bounds, fill)

    def _fill(self, request: ReadRequest) -> float:
        return 0 if request.image.label is not None else self.fill

    # -- concurrency ------------------------------------------------------------------------
    def _engine(self, site: str) -> ReadEngine:
        if self.engine is Engine.TENSORSTORE and not self.store(site).process_local:
            from atlas.read.ts_engine import tensorstore_engine

            return tensorstore_engine(self.cache_bytes)
        from atlas.read.zarr_engine import zarr_engine

        return zarr_engine()

    def concurrency_for(self, site: str) -> int:
        """Inner chunks kept in flight for ``site``: the fixed value, or what auto chose.

        Auto times a few small GETs of the site on first use (:data:`LATENCY_KEY`, through
        the engine's own path) and applies :func:`~atlas.read.concurrency.in_flight_for`.
        """
        if self.concurrency is not None:
            self.store(site)
            return self.concurrency
        store = self.store(site)
        with self._lock:
            site_lock = self._site_locks.setdefault(site, threading.Lock())
        with site_lock:
            if site not in self._in_flight:
                latency = self._engine(site).latency(store, LATENCY_KEY)
                self._in_flight[site] = in_flight_for(latency)
            return self._in_flight[site]

    # -- reading ----------------------------------------------------------------------------
    def read(self, request: ReadRequest) -> Patch:
        """Read one request (see :meth:`read_many`)."""
        return self.read_many([request])[0]

    def read_many(self, requests: Sequence[ReadRequest]) -> list[Patch]:
        """Read every request, in the order given.

        All requests are validated first (no I/O happens if any is bad). Each site's reads
        are grouped by shard and issued with its in-flight budget; sites are read at once.

        Raises
        ------
        NotFound, InvalidInput
            As for :meth:`validate`, before any pixel is read.
        CorruptData
            A chunk fails its checksum or cannot be decoded (the message names the image,
            level, chunk index and shard object).
        StoreUnavailable
            A site did not answer after the retry policy.
        Forbidden
            A site refused the credentials.
        """
        plans = [self._plan(i, r) for i, r in enumerate(requests)]
        by_site: dict[str, list[PlannedRead]] = defaultdict(list)
        for p in plans:
            by_site[p.request.image.site].append(p)
        raw: dict[int, np.ndarray] = {}
        jobs = [(site, list(shard_groups(reads))) for site, reads in by_site.items()]
        jobs = [(site, groups) for site, groups in jobs if groups]
        if len(jobs) == 1:
            raw.update(self._read_site(*jobs[0]))
        elif jobs:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                for part in pool.map(lambda job: self._read_site(*job), jobs):
                    raw.update(part)
        return [self._patch(p, raw.get(p.index)) for p in plans]

    def _read_site(self, site: str, groups: list[list[PlannedRead]]) -> dict[int, np.ndarray]:
        store = self.store(site)
        retry = self.retry if self.retry is not None else store.retry
        return self._engine(site).read_site(
            store, groups, self.concurrency_for(site), retry, self.node
        )

    def _patch(self, planned: PlannedRead, box: np.ndarray | None) -> Patch:
        request, info = planned.request, planned.info
        assert request.region is not None
        dtype = out_dtype(request, info)
        if box is None:
            data = np.full(request.region.size, self._fill(request), dtype=dtype)
        elif planned.padded:
            data = np.full(request.region.size, self._fill(request), dtype=dtype)
            data[planned.target] = box
        else:
            data = np.ascontiguousarray(box, dtype=dtype)
        affine = info.patch_affine(request.level, request.region.start)
        n = info.n_spatial
        return Patch(
            data=data,
            affine=affine,
            request=request,
            spacing=info.level_spacing(request.level),
            origin=tuple(float(v) for v in affine[:3, n]),
            direction=info.direction,
            padded=planned.padded,
        )

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Forget this reader's cached metadata and measured latencies.

        Open arrays and the chunk cache belong to the process (shared by its readers) and
        stay; the stores are the caller's and stay open.
        """
        self._reset()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rebuild(stores: dict[str, Store], options: dict[str, Any]) -> Reader:
    return Reader(stores, **options)
