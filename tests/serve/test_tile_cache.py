"""The rendered-tile cache: bounded in bytes, least recently used out first, thread-safe."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from atlas.errors import InvalidInput
from atlas.serve.tile_cache import TileCache


@dataclass(frozen=True)
class Tile:
    data: bytes


def test_evicts_least_recently_used_within_the_byte_budget() -> None:
    cache: TileCache[Tile] = TileCache(100)
    for key in "abc":
        assert cache.put(key, Tile(b"x" * 30))
    assert cache.get("a") is not None  # a is now the most recent; b the least
    assert cache.put("d", Tile(b"y" * 30))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "acd" if k in cache}
    stats = cache.stats()
    assert (stats.items, stats.nbytes, stats.evictions) == (3, 90, 1)
    assert cache.put("big", Tile(b"z" * 80))  # fits the budget: evicts until it fits
    assert cache.stats().nbytes <= 100 and "big" in cache and len(cache) == 1
    assert cache.get("b") is None
    assert cache.stats().hits == 1 and cache.stats().misses == 1


def test_a_tile_larger_than_the_budget_is_not_cached() -> None:
    cache: TileCache[Tile] = TileCache(50)
    cache.put("a", Tile(b"x" * 10))
    assert not cache.put("huge", Tile(b"x" * 51))
    assert "huge" not in cache and "a" in cache and cache.stats().refused == 1
    cache.put("a", Tile(b"x" * 20))  # replacing a key counts its bytes once
    assert cache.stats().nbytes == 20
    assert not cache.put("a", Tile(b"x" * 60)) and "a" not in cache
    assert cache.stats().nbytes == 0
    off: TileCache[Tile] = TileCache(0)
    assert not off.put("a", Tile(b"1")) and len(off) == 0


def test_get_or_make_and_clear() -> None:
    cache: TileCache[Tile] = TileCache(1000)
    made = []
    tile, hit = cache.get_or_make("k", lambda: made.append(1) or Tile(b"abc"))
    assert not hit and tile.data == b"abc"
    tile, hit = cache.get_or_make("k", lambda: made.append(1) or Tile(b"other"))
    assert hit and tile.data == b"abc" and len(made) == 1
    cache.clear()
    assert len(cache) == 0 and cache.stats().nbytes == 0


def test_concurrent_use_keeps_the_bound() -> None:
    cache: TileCache[Tile] = TileCache(10_000)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(2000):
                key = f"{(seed * 7919 + i * 31) % 300}"
                if cache.get(key) is None:
                    cache.put(key, Tile(b"x" * (50 + int(key) % 150)))
                assert cache.stats().nbytes <= 10_000
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.nbytes <= 10_000 and stats.hits + stats.misses == 16_000
    assert stats.nbytes == sum(50 + int(k) % 150 for k in map(str, range(300)) if k in cache)


@pytest.mark.parametrize("size", [-1, 1.5, "10", True])
def test_bad_budget(size) -> None:
    with pytest.raises(InvalidInput, match="tile cache size"):
        TileCache(size)


def test_plain_bytes_are_sized_by_their_length() -> None:
    cache: TileCache[bytes] = TileCache(10)
    assert cache.put("a", b"12345") and cache.put("b", b"123456")
    assert "a" not in cache and cache.get("b") == b"123456" and cache.stats().nbytes == 6
