"""What ``atlas bench stream`` measures of one pipeline run, and how.

- :class:`Sink` receives the patches a pipeline yields, in order: counts them, stamps the first
  batch, and keeps each patch's key and CRC-32 (checked against the ground truth afterwards).
- :class:`TreeMemory` samples the proportional set size (PSS: shared pages split between the
  processes sharing them, so forked DataLoader workers are not counted twice) of this process
  and every descendant except the servers it is told to leave out, and keeps the peak.
- CPU time is this process's user + system time plus that of its reaped children
  (``os.times``): DataLoader workers are joined when their iterator ends, so they are counted;
  the SeaweedFS and proxy processes live on and are not.
- :func:`spearman`: rank correlation of output order against storage order (shuffle quality:
  0 is no visible order, 1 is storage order).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.bench.stream_data import BenchData, patch_crc

__all__ = ["Measurement", "Sink", "TreeMemory", "measure", "spearman"]

_SAMPLE_EVERY_S = 0.05


def _pss_bytes(pid: int) -> int:
    """PSS of one process (RSS where smaps_rollup is missing); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # gone, or no psutil
        return 0


class TreeMemory:
    """Peak PSS of this process and its descendants (but ``exclude``), sampled in a thread."""

    def __init__(self, exclude: Iterable[int] = ()) -> None:
        self.exclude = set(exclude)
        self.peak = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        """Current PSS sum of the tree, in bytes."""
        import psutil

        me = psutil.Process()
        pids = [me.pid]
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in me.children(recursive=True)]
        pids = [p for p in pids if p not in self.exclude]
        self.processes = max(self.processes, len(pids))
        total = sum(_pss_bytes(p) for p in pids)
        self.peak = max(self.peak, total)
        return total

    def _loop(self) -> None:
        while not self._stop.wait(_SAMPLE_EVERY_S):
            self.sample()

    def __enter__(self) -> TreeMemory:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


class Sink:
    """Receives a pipeline's patches: ``add(keys, patches)`` per batch, in output order."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.keys: list[tuple[int, int, int, int]] = []
        self.crcs: list[int] = []
        self.first_batch_at: float | None = None
        self.batches = 0
        self.first_batch_samples = 0
        self.started = time.perf_counter()

    @property
    def full(self) -> bool:
        """The pipeline has delivered ``limit`` patches (it should stop)."""
        return self.limit is not None and len(self.keys) >= self.limit

    def add(
        self,
        keys: Iterable[tuple[int, int, int, int]],
        images: Iterable[np.ndarray],
        labels: Iterable[np.ndarray],
    ) -> None:
        """One batch: keys, image and label patches (z, y, x; any dtype of integral values)."""
        first = self.first_batch_at is None
        if first:
            self.first_batch_at = time.perf_counter()
        self.batches += 1
        for key, image, label in zip(keys, images, labels, strict=True):
            if self.full:
                break
            self.keys.append(tuple(int(k) for k in key))  # type: ignore[arg-type]
            self.crcs.append(patch_crc(image, label))
        if first:
            self.first_batch_samples = len(self.keys)


@dataclass
class Measurement:
    """One run of one pipeline."""

    samples: int
    wall_s: float
    first_batch_s: float
    steady_rate: float  # samples/s after the first batch (startup left out)
    cpu_s: float
    peak_memory_bytes: int
    baseline_memory_bytes: int
    processes: int
    spearman: float
    verified: bool
    mismatches: int
    list_checksum: int
    keys: list[tuple[int, int, int, int]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the keys)."""
        return {k: v for k, v in self.__dict__.items() if k != "keys"}


def spearman(ranks: list[int]) -> float:
    """Spearman correlation of output position against storage position (``ranks``).

    The same measure as the stream's own (:func:`atlas.stream.spearman`), on the permutation
    that sorts the outputs into storage order (ties, e.g. a patch yielded twice, in output
    order).
    """
    from atlas.stream import spearman as of_permutation

    order = np.argsort(np.argsort(np.asarray(ranks), kind="stable"), kind="stable")
    return of_permutation(order)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(
    data: BenchData,
    run: Callable[[Sink], None],
    *,
    limit: int | None = None,
    exclude_pids: Iterable[int] = (),
) -> Measurement:
    """Run ``run(sink)`` once and measure it; then check every patch against the ground truth.

    ``list_checksum`` is an order-free digest of the (key, CRC) pairs: equal for every pipeline
    that read the same list, whatever its order.
    """
    memory = TreeMemory(exclude_pids)
    baseline = memory.sample()
    memory.peak = 0
    cpu0 = _cpu_seconds()
    with memory:
        sink = Sink(limit)
        run(sink)
        end = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    mismatches = sum(
        1 for key, crc in zip(sink.keys, sink.crcs, strict=True) if data.expected_crc(key) != crc
    )
    digest = 0
    for key, crc in zip(sink.keys, sink.crcs, strict=True):
        digest = (digest + _pair_digest(key, crc)) % (1 << 61)
    first = (sink.first_batch_at or end) - sink.started
    after = len(sink.keys) - sink.first_batch_samples
    steady = after / (end - sink.first_batch_at) if sink.first_batch_at and after else 0.0
    return Measurement(
        samples=len(sink.keys),
        wall_s=end - sink.started,
        first_batch_s=first,
        steady_rate=steady,
        cpu_s=cpu,
        peak_memory_bytes=max(memory.peak - baseline, 0),
        baseline_memory_bytes=baseline,
        processes=memory.processes,
        spearman=spearman([data.storage_rank(k) for k in sink.keys]),
        verified=bool(sink.keys) and mismatches == 0,
        mismatches=mismatches,
        list_checksum=digest,
        keys=sink.keys,
    )


def _pair_digest(key: tuple[int, ...], crc: int) -> int:
    """A 32-bit digest of one (key, CRC) pair (summed over a run: order-free)."""
    return zlib.crc32(repr((tuple(key), crc)).encode())
