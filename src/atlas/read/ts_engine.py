"""The tensorstore engine: each level opened once per process, one chunk cache, batched reads.

- **One cache per process.** A process-wide parent ``tensorstore.Context`` holds the
  ``cache_pool`` (``total_bytes_limit = cache_bytes``) and the ``data_copy_concurrency``
  (decoding threads = cores). Each store gets a child context of it
  (:meth:`atlas.storage.Store.tensorstore_context` with ``parent``): its own credentials and
  retry bounds (decision 0030 keeps sites apart per context), the shared cache.
- **Each level opened once per process**, through :meth:`Store.open_tensorstore`, and kept in
  a :class:`~atlas.read.engine.ProcessCache` keyed by store location and array path.
- **Batched, bounded.** Each shard group is issued as one ``tensorstore.Batch`` (tensorstore
  then reads that shard's index once and coalesces its chunks' byte ranges); groups are
  issued one after the other without waiting, until ``limit`` shard reads are in flight; only then
  is the oldest read awaited.
- **Retries.** A read that fails with :class:`~atlas.errors.StoreUnavailable` (each attempt
  bounded by the site's deadline, :func:`atlas.storage.timeouts.ts_result`) is issued again
  per the retry policy; after the last attempt the error is raised.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from atlas.errors import StoreUnavailable
from atlas.read.concurrency import MAX_IN_FLIGHT, available_cores, measure_latency
from atlas.read.engine import NodeOf, ProcessCache, ReadEngine, batches, tensorstore_error
from atlas.read.plan import PlannedRead
from atlas.read.request import Engine
from atlas.storage import RetryPolicy, Store
from atlas.storage.timeouts import ts_result

__all__ = ["TensorstoreEngine", "tensorstore_engine"]

#: one engine (so one cache pool) per cache size per process
_ENGINES = ProcessCache()


def tensorstore_engine(cache_bytes: int) -> TensorstoreEngine:
    """The tensorstore engine of this process with a chunk cache of ``cache_bytes``."""
    engine: TensorstoreEngine = _ENGINES.get(cache_bytes, lambda: TensorstoreEngine(cache_bytes))
    return engine


class TensorstoreEngine(ReadEngine):
    """Reads through tensorstore (module docstring); get one with :func:`tensorstore_engine`.

    Parameters
    ----------
    cache_bytes
        Size of the process's chunk cache (``cache_pool.total_bytes_limit``).
    """

    kind = Engine.TENSORSTORE

    def __init__(self, cache_bytes: int) -> None:
        self.cache_bytes = cache_bytes
        self._parent: Any = None
        self._handles = ProcessCache()

    def _context(self, store: Store) -> Any:
        def make() -> Any:
            if self._parent is None:
                import tensorstore as ts

                self._parent = ts.Context(
                    {
                        "cache_pool": {"total_bytes_limit": self.cache_bytes},
                        "data_copy_concurrency": {"limit": available_cores()},
                    }
                )
            # the window bounds requests in flight; tensorstore's own cap must not be lower
            resources = {"s3_request_concurrency": {"limit": MAX_IN_FLIGHT}}
            return store.tensorstore_context(parent=self._parent, resources=resources)

        return self._handles.get(("context", store.location), make)

    def array(self, store: Store, path: str, version: Any = None) -> Any:
        """The tensorstore handle of the zarr array at ``path`` (opened once per process).

        ``version`` (the level's metadata) is part of the key: an image written again with
        another shape is opened again.
        """

        def make() -> Any:
            spec = {"driver": "zarr3", "kvstore": store.kvstore_spec(path)}
            try:
                return store.open_tensorstore(
                    spec, context=self._context(store), read=True, open=True
                )
            except Exception as exc:
                raise tensorstore_error(exc, store, f"opening array {path!r}") from exc

        return self._handles.get(("array", store.location, path, version), make)

    def latency(self, store: Store, key: str) -> float:
        """Fastest of a few tensorstore GETs of ``key`` (a small metadata object)."""
        kv = self._handles.get(
            ("kvstore", store.location),
            lambda: store.open_kvstore(context=self._context(store)),
        )
        return measure_latency(lambda: ts_result(kv.read(key), store.location, "read"))

    def read_site(
        self,
        store: Store,
        groups: Sequence[list[PlannedRead]],
        limit: int,
        retry: RetryPolicy | None,
        node_of: NodeOf,
    ) -> dict[int, np.ndarray]:
        """See :meth:`ReadEngine.read_site`."""
        import tensorstore as ts

        out: dict[int, np.ndarray] = {}
        pending: deque[tuple[PlannedRead, Any, Any]] = deque()
        in_flight = 0

        def finish() -> None:
            nonlocal in_flight
            planned, arr, future = pending.popleft()
            in_flight -= planned.gets
            out[planned.index] = self._result(store, planned, arr, future, retry, node_of)

        try:
            for group in batches(groups, limit):
                weight = sum(p.gets for p in group)
                while pending and in_flight + weight > limit:
                    finish()
                arrays = [self.array(store, *_array_path(node_of, p)) for p in group]
                with ts.Batch() as batch:
                    for planned, arr in zip(group, arrays, strict=True):
                        pending.append((planned, arr, arr[planned.source].read(batch=batch)))
                in_flight += weight
            while pending:
                finish()
        finally:
            for _, _, future in pending:  # an error left reads behind: drop them
                future.cancel()
        return out

    def _result(
        self,
        store: Store,
        planned: PlannedRead,
        arr: Any,
        future: Any,
        retry: RetryPolicy | None,
        node_of: NodeOf,
    ) -> np.ndarray:
        attempts = retry.attempts if retry is not None else 1
        attempt = 1
        while True:
            try:
                data: np.ndarray = ts_result(future, store.location, "read tensorstore")
                return data
            except Exception as exc:
                what = f"reading {planned.request.image} level {planned.request.level}"
                err = tensorstore_error(exc, store, what, node_of(planned.request.image), planned)
                if not isinstance(err, StoreUnavailable) or attempt >= attempts:
                    raise err from exc
            assert retry is not None
            time.sleep(retry.delay(attempt))
            attempt += 1
            future = arr[planned.source].read()

    def close(self) -> None:
        """Forget this process's open handles and contexts (the cache goes with them)."""
        self._handles.clear()
        self._parent = None


def _array_path(node_of: NodeOf, planned: PlannedRead) -> tuple[str, Any]:
    """The path and metadata of the array a planned read reads (image or label, its level)."""
    node = node_of(planned.request.image)
    level = node.levels[planned.request.level]
    return f"{node.path}/{level.path}", level
