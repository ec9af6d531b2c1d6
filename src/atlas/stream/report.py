"""What an epoch read, skipped and failed on, per site: :class:`EpochReport`.

DataLoader workers are other processes, so the counts live in a small block of shared memory
(:class:`SiteCounters`, one row of int64 per site) that the dataset creates before any worker
starts and every worker adds to. The report is a snapshot of it in the main process. It names
sites and error types only, never an image, subject or message text.

The same block carries the other way what workers that stay up between epochs need to know
when an epoch starts (:meth:`SiteCounters.publish`): the epoch, the seed, the samples already
consumed and the batch size.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EpochReport", "SiteCounters", "SiteReport"]

#: locks from the spawn context pass to forked and to spawned workers alike (a fork-context lock
#: cannot go to a spawned process)
_LOCKS = multiprocessing.get_context("spawn")
_FIELDS = ("read", "skipped", "errors", "padded", "bytes")


@dataclass(frozen=True)
class SiteReport:
    """One site's counts in an epoch.

    Attributes
    ----------
    read
        Samples read (by this process and its DataLoader workers, read-ahead included).
    skipped
        Samples not yielded because their site failed (after the store's retry policy).
    errors
        Failed reads (one read covers the site's part of a read batch).
    padded
        Yielded samples that reach outside their volume (filled with the reader's fill).
    bytes
        Bytes of image and label data yielded.
    """

    read: int = 0
    skipped: int = 0
    errors: int = 0
    padded: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class EpochReport:
    """Per-site counts of one epoch (see :class:`SiteReport`), and the sites that failed."""

    epoch: int
    sites: Mapping[str, SiteReport] = field(default_factory=dict)

    @property
    def read(self) -> int:
        """Samples read, over every site."""
        return sum(s.read for s in self.sites.values())

    @property
    def skipped(self) -> int:
        """Samples skipped, over every site."""
        return sum(s.skipped for s in self.sites.values())

    @property
    def errors(self) -> int:
        """Failed reads, over every site."""
        return sum(s.errors for s in self.sites.values())

    @property
    def bytes(self) -> int:
        """Bytes yielded, over every site."""
        return sum(s.bytes for s in self.sites.values())

    @property
    def failed_sites(self) -> list[str]:
        """Sites with at least one failed read, sorted."""
        return sorted(name for name, s in self.sites.items() if s.errors)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "epoch": self.epoch,
            "sites": {name: dict(s.__dict__) for name, s in sorted(self.sites.items())},
        }


class SiteCounters:
    """Counts per site shared by a process and the DataLoader workers it starts.

    Created in the main process (before workers start); workers inherit it (fork) or receive
    it while being spawned. Pickled any other way it starts again from zero (a copy, not a
    share), since shared memory can only pass to a process as it starts.
    """

    def __init__(self, sites: Iterable[str]) -> None:
        self.sites: tuple[str, ...] = tuple(sorted(set(sites)))
        self._row = {name: i for i, name in enumerate(self.sites)}
        self._lock = _LOCKS.Lock()
        self._values = multiprocessing.RawArray("q", max(1, len(self.sites) * len(_FIELDS)))
        self.epoch = multiprocessing.RawValue("q", 0)
        self.control = multiprocessing.RawArray("q", 5)

    def __getstate__(self) -> dict[str, Any]:
        from multiprocessing import context

        state = dict(self.__dict__)
        if context.get_spawning_popen() is None:  # not a process start: a fresh copy
            state.pop("_lock")
            state.pop("_values")
            state.pop("epoch")
            state.pop("control")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_values" not in state:
            self._lock = _LOCKS.Lock()
            self._values = multiprocessing.RawArray("q", max(1, len(self.sites) * len(_FIELDS)))
            self.epoch = multiprocessing.RawValue("q", 0)
            self.control = multiprocessing.RawArray("q", 5)

    def add(self, site: str, **counts: int) -> None:
        """Add ``counts`` (``read=``, ``skipped=``, ...) to ``site``'s row."""
        row = self._row[site] * len(_FIELDS)
        with self._lock:
            for name, value in counts.items():
                self._values[row + _FIELDS.index(name)] += int(value)

    def publish(self, epoch: int, seed: int, consumed: int, batch: int) -> None:
        """Tell workers where the next iteration starts (read by :meth:`published`)."""
        with self._lock:
            self.control[0], self.control[1], self.control[2] = int(epoch), int(seed), int(consumed)
            self.control[3], self.control[4] = int(batch), 1

    def published(self) -> tuple[int, int, int, int] | None:
        """``(epoch, seed, consumed, batch)`` last published, or ``None`` if none was."""
        with self._lock:
            values = list(self.control)
        return None if not values[4] else (values[0], values[1], values[2], values[3])

    def reset(self, epoch: int) -> None:
        """Start counting ``epoch`` from zero."""
        with self._lock:
            for i in range(len(self._values)):
                self._values[i] = 0
            self.epoch.value = int(epoch)

    def report(self) -> EpochReport:
        """A snapshot of the counts."""
        with self._lock:
            values = list(self._values)
            epoch = int(self.epoch.value)
        n = len(_FIELDS)
        sites = {
            name: SiteReport(**dict(zip(_FIELDS, values[i * n : (i + 1) * n], strict=True)))
            for i, name in enumerate(self.sites)
        }
        return EpochReport(epoch=epoch, sites=sites)
