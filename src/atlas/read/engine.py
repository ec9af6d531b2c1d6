"""What a read engine does, and what every engine shares: the in-flight window and error mapping.

An engine reads, for one site, the planned boxes of :mod:`atlas.read.plan`, shard group by
shard group, with at most ``limit`` shard reads in flight (the budget of
:mod:`atlas.read.concurrency`): every read of a group is issued before any is awaited, and the
oldest read is awaited only when the next group would exceed the budget. It returns the raw
boxes (stored dtype, clipped to the level); the :class:`~atlas.read.Reader` pads and casts.

Errors come out as :mod:`atlas.errors`: a chunk that fails its checksum or cannot be decoded
is located chunk by chunk with zarr-python (:meth:`atlas.ome.OmeImage.locate_corruption`), so
both engines name the same image, level, chunk and shard object.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from atlas.errors import AtlasError, CorruptData, Forbidden, NotFound, StoreUnavailable
from atlas.ome import OmeImage, OmeLabel
from atlas.read.plan import PlannedRead
from atlas.read.request import Engine, ImageRef
from atlas.storage import RetryPolicy, Store

__all__ = [
    "NodeOf",
    "ProcessCache",
    "ReadEngine",
    "batches",
    "locate_error",
    "tensorstore_error",
]

#: the opened image (or label image) of a ref, from the reader's per-process cache
NodeOf = Callable[[ImageRef], OmeImage | OmeLabel]

#: tensorstore status texts of a chunk that fails its checksum or cannot be decoded
_TS_CORRUPT = ("DATA_LOSS", "Digest mismatch", "decod", "Error reading shard")
_TS_FORBIDDEN = ("PERMISSION_DENIED", "UNAUTHENTICATED", "403", "401", "AccessDenied")
_TS_UNAVAILABLE = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "ABORTED",
    "CURL error",
    "RESOURCE_EXHAUSTED",
)


class ProcessCache:
    """A dict that empties itself in a new process (after ``fork`` or in a spawned worker).

    Open handles (tensorstore contexts, arrays) belong to the process that made them; a
    child process reopens its own on first use.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._items: dict[Any, Any] = {}
        self.lock = threading.RLock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value at ``key``, made (once, under the lock) by ``make`` if absent."""
        with self.lock:
            if self._pid != os.getpid():
                self._items, self._pid = {}, os.getpid()
            if key not in self._items:
                self._items[key] = make()
            return self._items[key]

    def clear(self) -> None:
        """Forget every item."""
        with self.lock:
            self._items.clear()


def locate_error(node: OmeImage | OmeLabel, planned: PlannedRead, exc: BaseException) -> AtlasError:
    """The :class:`CorruptData` naming the chunk of ``planned`` that fails to decode.

    Re-reads the touched chunks one at a time with zarr-python; if the store itself fails
    meanwhile, that error is returned instead.
    """
    if isinstance(exc, AtlasError):
        return exc
    assert planned.source is not None
    try:
        arr = node.array(planned.request.level)
    except AtlasError as err:
        return err
    return node.locate_corruption(arr, planned.request.level, planned.source, exc)  # type: ignore[arg-type]


def tensorstore_error(
    exc: BaseException,
    store: Store,
    what: str,
    node: OmeImage | OmeLabel | None = None,
    planned: PlannedRead | None = None,
) -> AtlasError:
    """An :mod:`atlas.errors` exception for a tensorstore failure of ``what`` on ``store``."""
    if isinstance(exc, AtlasError):
        return exc
    text = " ".join(str(exc).split())
    where = f"site {store.site!r} " if store.site else ""
    kw = {"site": store.site, "location": store.url}
    if any(code in text for code in _TS_FORBIDDEN):
        return Forbidden(f"{where}store {store.url} refused {what}: {text[:200]}", **kw)
    if any(code in text for code in _TS_UNAVAILABLE):
        return StoreUnavailable(f"{where}store {store.url} did not answer ({what}): {text[:200]}",
                                **kw)  # fmt: skip
    if "NOT_FOUND" in text:
        return NotFound(f"{where}store {store.url}: {what} found nothing: {text[:200]}", **kw)
    if node is not None and planned is not None and any(c in text for c in _TS_CORRUPT):
        return locate_error(node, planned, exc)
    return CorruptData(f"{where}store {store.url}: {what} failed: {text[:300]}", **kw)


def batches(groups: Sequence[list[PlannedRead]], limit: int) -> list[list[PlannedRead]]:
    """``groups`` cut so that no batch weighs more than ``limit`` shard reads.

    Reads of one shard stay together (in order) as far as the budget allows; a single read
    heavier than the budget (a whole volume) is a batch of its own.
    """
    out: list[list[PlannedRead]] = []
    for group in groups:
        batch: list[PlannedRead] = []
        weight = 0
        for planned in group:
            if batch and weight + planned.gets > limit:
                out.append(batch)
                batch, weight = [], 0
            batch.append(planned)
            weight += planned.gets
        if batch:
            out.append(batch)
    return out


class ReadEngine(ABC):
    """Reads planned boxes of one site's arrays (see the module docstring)."""

    #: which engine this is
    kind: Engine

    @abstractmethod
    def read_site(
        self,
        store: Store,
        groups: Sequence[list[PlannedRead]],
        limit: int,
        retry: RetryPolicy | None,
        node_of: NodeOf,
    ) -> dict[int, np.ndarray]:
        """The boxes of ``groups`` (by :attr:`PlannedRead.index`), ``limit`` shard reads in flight.

        Raises
        ------
        CorruptData, StoreUnavailable, Forbidden, NotFound
            The first read that failed (the others are cancelled or dropped).
        """

    @abstractmethod
    def latency(self, store: Store, key: str) -> float:
        """Seconds for one small GET of ``key`` through this engine's path (fastest of a few)."""

    def close(self) -> None:  # noqa: B027  (optional for engines)
        """Forget open handles of this process (they reopen on next use)."""
