"""The zarr-python engine: the fallback, with the same values and the same errors.

Each level is opened once per process as a zarr ``AsyncArray`` on the store's wrapped zarr
store (:meth:`atlas.storage.Store.zarr_store`: error translation, injected latency and
faults, retries per the store's policy). Reads run as asyncio tasks on zarr's event loop,
shard group after shard group, with at most ``limit`` shard reads in flight; every read of a group
starts before any is awaited. It also reads process-local (``memory://``) stores, which
tensorstore cannot see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlas.errors import AtlasError
from atlas.read.concurrency import measure_latency
from atlas.read.engine import NodeOf, ProcessCache, ReadEngine, batches, locate_error
from atlas.read.plan import PlannedRead
from atlas.read.request import Engine
from atlas.storage import RetryPolicy, Store

__all__ = ["ZarrEngine", "zarr_engine"]

_ENGINE = ProcessCache()


def zarr_engine() -> ZarrEngine:
    """The zarr-python engine of this process."""
    engine: ZarrEngine = _ENGINE.get("zarr", ZarrEngine)
    return engine


class ZarrEngine(ReadEngine):
    """Reads through zarr-python's async API (see the module docstring)."""

    kind = Engine.ZARR

    def __init__(self) -> None:
        self._arrays = ProcessCache()

    def array(self, node_of: NodeOf, planned: PlannedRead) -> Any:
        """The level's zarr ``AsyncArray`` (opened once per process)."""
        node = node_of(planned.request.image)
        level = node.levels[planned.request.level]
        path = f"{node.path}/{level.path}"
        st = node.store  # the wrapper settings are part of the key: they change what a read does
        key = (st.location, st.retry, st.latency, st.faults, path, level)
        return self._arrays.get(key, lambda: node.array(planned.request.level).async_array)

    def latency(self, store: Store, key: str) -> float:
        """Fastest of a few GETs of ``key`` through the store's zarr stack."""
        zstore, proto = store.zarr_store(), default_buffer_prototype()
        return measure_latency(lambda: sync(zstore.get(key, proto)))

    def read_site(
        self,
        store: Store,
        groups: Sequence[list[PlannedRead]],
        limit: int,
        retry: RetryPolicy | None,
        node_of: NodeOf,
    ) -> dict[int, np.ndarray]:
        """See :meth:`ReadEngine.read_site` (the store's own retry policy applies)."""
        arrays = {p.index: self.array(node_of, p) for g in groups for p in g}
        Outcome = np.ndarray | BaseException

        async def one(planned: PlannedRead) -> Outcome:
            try:
                return np.asarray(await arrays[planned.index].getitem(planned.source))
            except Exception as exc:  # located outside the event loop, below
                return exc

        async def run() -> tuple[dict[int, np.ndarray], tuple[PlannedRead, BaseException] | None]:
            tasks: dict[asyncio.Task[Outcome], PlannedRead] = {}
            out: dict[int, np.ndarray] = {}
            failed: list[tuple[PlannedRead, BaseException]] = []
            in_flight = 0

            async def collect() -> None:
                nonlocal in_flight
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    planned = tasks.pop(task)
                    in_flight -= planned.gets
                    result = task.result()
                    if isinstance(result, BaseException):
                        failed.append((planned, result))
                    else:
                        out[planned.index] = result

            for group in batches(groups, limit):
                weight = sum(p.gets for p in group)
                while tasks and in_flight + weight > limit and not failed:
                    await collect()
                if failed:
                    break
                for planned in group:
                    tasks[asyncio.ensure_future(one(planned))] = planned
                in_flight += weight
            while tasks:
                await collect()
            first = min(failed, key=lambda f: f[0].index) if failed else None
            return out, first

        result, first = sync(run())
        if first is not None:
            planned, exc = first
            if isinstance(exc, AtlasError):
                raise exc
            raise locate_error(node_of(planned.request.image), planned, exc) from exc
        return result

    def close(self) -> None:
        """Forget this process's open arrays."""
        self._arrays.clear()
