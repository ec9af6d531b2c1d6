"""The list-reading baselines of ``atlas bench stream``: naive, and the two ceilings.

- :func:`run_naive`: what most users write first — a map-style torch ``Dataset`` that opens the
  array with zarr-python (once per worker) and reads one patch per ``__getitem__``, through a
  ``DataLoader`` with 2 workers.
- :func:`run_tensorstore`: the practical ceiling — tensorstore with every read of the list
  issued before any is awaited, results taken in list order.
- :func:`run_numcodecs`: the physical ceiling — the same chunks' compressed bytes already in
  memory, each decoded once with numcodecs (one thread per core; two threads may race to decode
  the same chunk, as a cache would let them) and copied into the patches; no store, no I/O.
  :func:`load_chunks` fetches those bytes beforehand (not timed).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from atlas.bench.stream_data import LABEL, BenchData, PatchSpec, Site, volume_path
from atlas.bench.stream_measure import Sink
from atlas.errors import InvalidInput
from atlas.storage import Store

__all__ = ["ChunkBytes", "load_chunks", "run_naive", "run_numcodecs", "run_tensorstore"]


def _batches(items: list[PatchSpec], size: int) -> Iterator[list[PatchSpec]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------------------------
# naive


class _ZarrPatches:
    """Map-style dataset: sample ``i`` of the list (image and label patch), via zarr-python."""

    def __init__(self, store: Store, patches: list[PatchSpec]) -> None:
        self.store = store
        self.patches = patches
        self._pid: int | None = None
        self._arrays: dict[tuple[int, bool], Any] = {}

    def __len__(self) -> int:
        return len(self.patches)

    def _array(self, volume: int, label: bool) -> Any:
        import zarr

        if self._pid != os.getpid():  # a fresh worker: own store handle and arrays
            self._pid, self._arrays = os.getpid(), {}
            self._store = pickle.loads(pickle.dumps(self.store))
        if (volume, label) not in self._arrays:
            self._arrays[(volume, label)] = zarr.open_array(
                self._store.zarr_store(), path=f"{volume_path(volume, label)}/0", mode="r"
            )
        return self._arrays[(volume, label)]

    def _cut(self, spec: PatchSpec, label: bool) -> Any:
        import torch

        array = self._array(spec.volume, label)
        patch = spec.cut(lambda box: array[box], array.shape)
        return torch.from_numpy(np.ascontiguousarray(patch))

    def __getitem__(self, i: int) -> tuple[Any, Any, Any]:
        import torch

        spec = self.patches[i]
        return self._cut(spec, False), self._cut(spec, True), torch.tensor(spec.key)


def run_naive(site: Site, data: BenchData, sink: Sink, batch: int, workers: int = 2) -> None:
    """The naive loader: zarr-python, one sample per ``__getitem__``, ``DataLoader`` workers."""
    from torch.utils.data import DataLoader

    dataset = _ZarrPatches(site.store, data.patches)
    loader: Any = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False)  # type: ignore[arg-type]
    for images, labels, keys in loader:
        sink.add(keys.tolist(), images.numpy(), labels.numpy())


# --------------------------------------------------------------------------------------------
# tensorstore, every read at once


def run_tensorstore(site: Site, data: BenchData, sink: Sink, batch: int) -> None:
    """Every read of the list (images and labels) issued at once, then taken in list order."""
    from atlas.ome import open_image

    handles = {}
    for v in range(len(data.images)):
        image = open_image(site.store, volume_path(v))
        handles[v] = (image.tensorstore(0), image.label(LABEL).tensorstore(0))
    shape = data.shape
    futures = [tuple(h[p.clip(shape)[0]].read() for h in handles[p.volume]) for p in data.patches]
    done = 0
    for group in _batches(data.patches, batch):
        pairs = [
            [spec.cut(lambda _box, f=f: f.result(), shape) for f in futures[done + j]]
            for j, spec in enumerate(group)
        ]
        done += len(group)
        sink.add([p.key for p in group], [p[0] for p in pairs], [p[1] for p in pairs])


# --------------------------------------------------------------------------------------------
# numcodecs from memory


@dataclass
class ChunkBytes:
    """The compressed inner chunks the list touches, per volume, and how to decode them."""

    chunk: tuple[int, int, int]
    dtype: np.dtype
    fill: Any
    codecs: list[Any]  # numcodecs codecs, applied in reverse to decode
    checksum: bool  # each chunk ends with a 4-byte crc32c
    chunks: dict[tuple[int, int, int, int], bytes | None]  # (volume, cz, cy, cx) -> bytes

    def decode(self, key: tuple[int, int, int, int]) -> np.ndarray:
        """Chunk ``key`` decoded (the fill value where it was never written)."""
        raw = self.chunks[key]
        if raw is None:
            return np.full(self.chunk, self.fill, dtype=self.dtype)
        buf: Any = raw[:-4] if self.checksum else raw
        for codec in reversed(self.codecs):
            buf = codec.decode(buf)
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.chunk)


def _inner_codecs(
    meta: dict[str, Any],
) -> tuple[tuple[int, ...], tuple[int, ...], list[Any], str, bool]:
    import numcodecs

    (sharding,) = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"]
    config = sharding["configuration"]
    if config.get("index_location", "end") != "end":
        raise InvalidInput("the numcodecs ceiling reads shard indexes at the end only")
    codecs, endian, checksum = [], "little", False
    for codec in config["codecs"]:
        name, cfg = codec["name"], codec.get("configuration", {})
        if name == "bytes":
            endian = cfg.get("endian", "little")
        elif name == "zstd":
            codecs.append(numcodecs.Zstd(level=cfg.get("level", 0)))
        elif name == "blosc":
            codecs.append(numcodecs.Blosc(cname=cfg.get("cname", "lz4")))
        elif name == "crc32c":
            checksum = True
        else:
            raise InvalidInput(f"the numcodecs ceiling cannot decode codec {name!r}")
    shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    return shard, tuple(config["chunk_shape"]), codecs, endian, checksum


def _chunks_of(
    spec: PatchSpec, chunk: tuple[int, ...], shape: tuple[int, ...]
) -> list[tuple[int, int, int]]:
    """Inner chunks under the part of the box inside the volume."""
    inside, _pad = spec.clip(shape)
    ranges = [range(b.start // c, -(-b.stop // c)) for b, c in zip(inside, chunk, strict=True)]
    return [tuple(idx) for idx in product(*ranges)]  # type: ignore[misc]


def load_chunks(store: Store, data: BenchData, label: bool = False) -> ChunkBytes:
    """The compressed inner chunks the list touches, of the images (or the labels)."""
    meta = json.loads(store.read_bytes(f"{volume_path(0, label)}/0/zarr.json"))
    shard, chunk, codecs, endian, checksum = _inner_codecs(meta)
    per_shard = [s // c for s, c in zip(shard, chunk, strict=True)]
    n_inner = int(np.prod(per_shard))
    dtype = np.dtype(meta["data_type"]).newbyteorder("<" if endian == "little" else ">")
    wanted = {(p.volume, *c) for p in data.patches for c in _chunks_of(p, chunk, data.shape)}
    shards: dict[tuple[int, ...], bytes | None] = {}
    out: dict[tuple[int, int, int, int], bytes | None] = {}
    for volume, *idx in sorted(wanted):
        s_idx = tuple(i // n for i, n in zip(idx, per_shard, strict=True))
        if (volume, *s_idx) not in shards:
            key = f"{volume_path(volume, label)}/0/c/" + "/".join(str(i) for i in s_idx)
            shards[(volume, *s_idx)] = store.read_bytes(key) if store.exists(key) else None
        blob = shards[(volume, *s_idx)]
        if blob is None:
            out[(volume, *idx)] = None  # type: ignore[index]
            continue
        index = np.frombuffer(blob[-(n_inner * 16 + 4) : -4], dtype="<u8").reshape(*per_shard, 2)
        local = tuple(i % n for i, n in zip(idx, per_shard, strict=True))
        offset, nbytes = (int(v) for v in index[local])
        empty = offset == 2**64 - 1 and nbytes == 2**64 - 1
        out[(volume, *idx)] = None if empty else blob[offset : offset + nbytes]  # type: ignore[index]
    return ChunkBytes(chunk, dtype, meta.get("fill_value", 0), codecs, checksum, out)  # type: ignore[arg-type]


def _assemble(
    chunks: ChunkBytes,
    spec: PatchSpec,
    shape: tuple[int, ...],
    decoded: dict[tuple[int, int, int, int], np.ndarray],
) -> np.ndarray:
    out = np.zeros(spec.size, dtype=chunks.dtype)  # zeros: the fill where the box is outside
    for idx in _chunks_of(spec, chunks.chunk, shape):
        key = (spec.volume, *idx)
        block = decoded.get(key)
        if block is None:  # each chunk decoded once, as a reader with a chunk cache would
            block = decoded[key] = chunks.decode(key)
        lo = [i * c for i, c in zip(idx, chunks.chunk, strict=True)]
        src, dst = [], []
        for a, n, l0, c, end in zip(spec.start, spec.size, lo, chunks.chunk, shape, strict=True):
            s0, s1 = max(a, l0, 0), min(a + n, l0 + c, end)
            src.append(slice(s0 - l0, s1 - l0))
            dst.append(slice(s0 - a, s1 - a))
        out[tuple(dst)] = block[tuple(src)]
    return out


def run_numcodecs(
    chunks: tuple[ChunkBytes, ChunkBytes], data: BenchData, sink: Sink, batch: int
) -> None:
    """Decode the list's chunks (image, label) from memory, each once, and assemble the samples."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    images, labels = chunks
    cache: tuple[dict[Any, np.ndarray], dict[Any, np.ndarray]] = ({}, {})

    def one(spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
        return (
            _assemble(images, spec, data.shape, cache[0]),
            _assemble(labels, spec, data.shape, cache[1]),
        )

    with ThreadPoolExecutor(max_workers=threads) as pool:
        samples = pool.map(one, data.patches)
        for group in _batches(data.patches, batch):
            pairs = [next(samples) for _ in group]
            sink.add([p.key for p in group], [p[0] for p in pairs], [p[1] for p in pairs])
