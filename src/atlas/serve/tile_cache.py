"""A bounded in-memory cache of rendered tiles: least recently used first out, sized in bytes.

Keys are tile ETags (:func:`atlas.serve.render.tile_etag`): they already change with the image's
metadata and name every parameter of the tile, so a cached tile is never stale for its key.
A tile larger than the whole budget is not cached (it would evict everything and stay alone).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from atlas.errors import InvalidInput

__all__ = ["CacheStats", "TileCache"]


class _Tile(Protocol):
    @property
    def data(self) -> bytes: ...


T = TypeVar("T", bound="_Tile | bytes")


def _size(value: _Tile | bytes) -> int:
    """Bytes a cached value holds: its length (``bytes``) or its ``data``'s length."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return len(value.data)


@dataclass(frozen=True)
class CacheStats:
    """Counters of a :class:`TileCache` at one moment."""

    items: int
    nbytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    refused: int


class TileCache(Generic[T]):
    """Thread-safe LRU of tiles bounded by their total bytes.

    A value is ``bytes`` (an encoded tile) or anything with ``data: bytes`` (a
    :class:`~atlas.serve.render.RenderedTile`); its size is the length of those bytes.

    Parameters
    ----------
    max_bytes
        Budget for the cached tiles' bytes (0 disables the cache).
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InvalidInput(f"tile cache size must be an integer >= 0 bytes, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[str, T] = OrderedDict()
        self._nbytes = 0
        self._hits = self._misses = self._evictions = self._refused = 0

    def get(self, key: str) -> T | None:
        """The tile at ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            tile = self._items.get(key)
            if tile is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return tile

    def put(self, key: str, tile: T) -> bool:
        """Cache ``tile`` at ``key``, evicting the least recently used; ``False`` if too large."""
        size = _size(tile)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= _size(old)
            if size > self.max_bytes:
                self._refused += 1
                return False
            self._items[key] = tile
            self._nbytes += size
            while self._nbytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= _size(evicted)
                self._evictions += 1
            return True

    def get_or_make(self, key: str, make: Callable[[], T]) -> tuple[T, bool]:
        """The tile at ``key``, or ``make()`` cached; and whether it was a hit.

        ``make`` runs outside the lock (two threads missing the same key may both render it;
        the result is the same bytes).
        """
        tile = self.get(key)
        if tile is not None:
            return tile, True
        tile = make()
        self.put(key, tile)
        return tile, False

    def clear(self) -> None:
        """Forget every tile (counters stay)."""
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    def stats(self) -> CacheStats:
        """Current counters."""
        with self._lock:
            return CacheStats(
                items=len(self._items),
                nbytes=self._nbytes,
                max_bytes=self.max_bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                refused=self._refused,
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items
