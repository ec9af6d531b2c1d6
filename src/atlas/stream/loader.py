"""The DataLoader of an :class:`~atlas.stream.AtlasDataset`: :class:`StreamLoader`.

A thin wrapper over ``torch.utils.data.DataLoader`` that

- tells the dataset the batch size, so each worker takes whole batches in turn and the
  DataLoader's round robin gives back the epoch's global order (any number of workers);
- batches with :func:`~atlas.stream.collate.collate_samples` into pinned memory when CUDA is
  present (:func:`~atlas.stream.collate.to_device` then copies with ``non_blocking``);
- counts the samples delivered to the training loop, so ``state_dict()`` taken between two
  steps resumes exactly there (workers are other processes: only the loader sees what was
  delivered);
- keeps its worker processes between epochs (they read the epoch and the start position
  from shared memory), and starts them by ``fork`` only while this process has never imported
  tensorstore, else from a ``forkserver`` (:func:`worker_context`): tensorstore aborts a
  process forked from one that has read with it (decision 0048).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from atlas.errors import InvalidInput
from atlas.read import credential_variables
from atlas.stream.collate import collate_samples, to_device
from atlas.stream.partition import rank_positions

if TYPE_CHECKING:
    from atlas.stream.report import EpochReport

__all__ = ["WORKER_PRELOAD", "StreamLoader", "WorkerEnvironment", "worker_context"]

#: modules the worker server imports once, so that each epoch's workers start in milliseconds
#: (importing tensorstore is safe before a fork; reading with it is not)
WORKER_PRELOAD = (
    "numpy", "numpy.random", "pyarrow", "pyarrow.compute", "torch", "zarr", "tensorstore",
    "atlas.stream.dataset", "atlas.stream.loader", "atlas.stream.collate",
    "atlas.read.reader", "atlas.read.ts_engine", "atlas.read.zarr_engine",
)  # fmt: skip
#: preloaded too when a site of the stream is on S3 (a worker that meets an image the
#: training process did not open reads its metadata through them)
S3_PRELOAD = ("atlas.storage.backends.s3", "atlas.storage.s3session", "s3fs")


def worker_context(extra: tuple[str, ...] = ()) -> Any:
    """The multiprocessing context DataLoader workers start from: a ``forkserver``.

    Workers are forked from a small server process that imported :data:`WORKER_PRELOAD` and
    never read anything, rather than from the training process: tensorstore refuses to run in
    a child forked after it started its threads, and the training process may hold a large
    catalog and CUDA state a worker has no use for. (As with ``spawn``, a script that starts
    workers needs an ``if __name__ == "__main__":`` guard.)

    ``extra`` modules are preloaded too (the loader adds the package of the dataset's
    transform, e.g. ``monai``). Preloading takes effect when the server starts: the first
    loader with workers in a process starts it.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([*WORKER_PRELOAD, *extra])  # no effect once the server runs
    return ctx


class StreamLoader:
    """Batches of an :class:`~atlas.stream.AtlasDataset`, in the epoch's global order.

    Parameters
    ----------
    dataset
        An :class:`~atlas.stream.AtlasDataset` (its ``batch_size`` is set to ``batch_size``;
        this module does not import it, the dataset imports this one).
    batch_size
        Samples per batch (per rank).
    num_workers
        DataLoader worker processes (0: read in this process, still ahead on a thread).
    pin_memory
        Batches in page-locked memory for fast, non-blocking GPU copies; default: when CUDA
        is available.
    collate_fn
        How samples become a batch (default :func:`~atlas.stream.collate.collate_samples`).
    prefetch_factor
        Batches each worker keeps ready (DataLoader's own queue, on top of the dataset's
        ``prefetch_bytes``); default 2.
    multiprocessing_context
        How workers start (default: ``fork`` while this process never imported tensorstore,
        else :func:`worker_context`, a forkserver; ``"fork"`` only if this process has not
        read with tensorstore).
    kwargs
        Passed to ``DataLoader`` (e.g. ``timeout``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 8,
        num_workers: int = 0,
        *,
        pin_memory: bool | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        prefetch_factor: int | None = None,
        multiprocessing_context: Any = None,
        **kwargs: Any,
    ) -> None:
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInput(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("shuffle", "sampler", "batch_sampler", "persistent_workers"):
            if name in kwargs:
                raise InvalidInput(
                    f"{name}= is not a StreamLoader option: the dataset orders, shuffles and "
                    "splits the epoch itself (and its workers always stay up between epochs)"
                )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.collate_fn = collate_fn or functools.partial(collate_samples, pin=self.pin_memory)
        self.prefetch_factor = prefetch_factor if num_workers else None
        if num_workers and prefetch_factor is None:
            self.prefetch_factor = 2
        self.kwargs = kwargs
        self.multiprocessing_context = multiprocessing_context
        self._loader: DataLoader[Any] | None = None
        dataset.batch_size = batch_size

    def __len__(self) -> int:
        """Batches this rank still gets in the current epoch."""
        ds = self.dataset
        mine = rank_positions(ds.rank, ds.world_size, len(ds), ds.state.consumed)
        return math.ceil(len(mine) / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        """The batches of the current epoch from where it stands.

        An epoch already delivered whole is followed by the next one (as if ``set_epoch`` had
        been called with the epoch after it), so ``for epoch in ...: for batch in loader:``
        reads every epoch, each in its own order; an epoch left part way continues.
        """
        ds = self.dataset
        ds.batch_size = self.batch_size
        if len(ds) and ds.state.consumed >= len(ds):
            ds.set_epoch(ds.state.epoch + 1)
        start, n = ds.state.consumed, len(ds)
        per_step = ds.world_size * self.batch_size
        # workers stay up between epochs: they read where to start from shared memory
        ds.counters.publish(ds.state.epoch, ds.state.seed, start, self.batch_size)
        for steps, batch in enumerate(self._data_loader(), start=1):
            ds.mark_consumed(min(n, start + steps * per_step))
            yield batch
        ds.mark_consumed(n)

    def _data_loader(self) -> DataLoader[Any]:
        if self._loader is None:
            workers = self.num_workers
            open_for_workers = getattr(self.dataset, "open_for_workers", None)
            if workers and callable(open_for_workers):
                open_for_workers()  # image metadata read once here, not again in each worker
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                num_workers=workers,
                collate_fn=self.collate_fn,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch_factor,
                persistent_workers=workers > 0,
                multiprocessing_context=self._context() if workers else None,
                **self._worker_kwargs(),
            )
        return self._loader

    def _worker_kwargs(self) -> dict[str, Any]:
        """The DataLoader options, with a ``worker_init_fn`` that gives workers the credentials.

        A worker from a forkserver inherits the environment the server started with, not the
        one this process has now: the variables naming the sites' keys, set after the server
        started, would be missing there. Workers get this process's values of exactly those
        variables (no others) before they read (decision 0053).
        """
        kwargs = dict(self.kwargs)
        reader = getattr(self.dataset, "reader", None)
        if self.num_workers and reader is not None:
            names = credential_variables(reader.stores.values())
            values = {n: os.environ[n] for n in names if n in os.environ}
            if values:
                kwargs["worker_init_fn"] = WorkerEnvironment(values, kwargs.get("worker_init_fn"))
        return kwargs

    def _context(self) -> Any:
        """How workers start: as given, else by fork or from a forkserver.

        Fork while this process never imported tensorstore (so it cannot have started
        tensorstore's threads), else a forkserver.
        """
        if self.multiprocessing_context is not None:
            return self.multiprocessing_context
        if "tensorstore" not in sys.modules:
            return multiprocessing.get_context("fork")
        return worker_context(_transform_modules(self.dataset) + _store_modules(self.dataset))

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        self._loader = None

    def __enter__(self) -> StreamLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the dataset does, from the loader -------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Read ``epoch`` next (see :meth:`AtlasDataset.set_epoch`)."""
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The stream state after the last batch delivered."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where ``state`` was taken (any number of workers)."""
        self.dataset.load_state_dict(state)

    def report(self) -> EpochReport:
        """Per-site counts of the epoch (see :meth:`AtlasDataset.report`)."""
        return self.dataset.report()

    @staticmethod
    def to_device(batch: Any, device: Any) -> Any:
        """``batch`` on ``device``: non-blocking copies of pinned tensors (CUDA)."""
        return to_device(batch, device)


class WorkerEnvironment:
    """A ``worker_init_fn`` that sets the credential variables of the sites, then calls ``then``.

    Its values travel to the worker in memory (the pipe a worker is started through) as they
    would by ``fork``; it never shows them (``repr`` names the variables only).
    """

    def __init__(self, values: Mapping[str, str], then: Callable[[int], Any] | None) -> None:
        self._values = dict(values)
        self._then = then

    def __call__(self, worker_id: int) -> None:
        """Set the variables in this worker process, then run the user's init function."""
        os.environ.update(self._values)
        if self._then is not None:
            self._then(worker_id)

    def __repr__(self) -> str:
        return f"WorkerEnvironment({sorted(self._values)})"


def _store_modules(dataset: Any) -> tuple[str, ...]:
    """What the worker server preloads for the dataset's sites (S3 clients for S3 sites)."""
    reader = getattr(dataset, "reader", None)
    stores = getattr(reader, "stores", {}) if reader is not None else {}
    if any(getattr(s.location, "scheme", "") == "s3" for s in stores.values()):
        return S3_PRELOAD
    return ()


def _transform_modules(dataset: Any) -> tuple[str, ...]:
    """The top package of the dataset's transform (imported once by the worker server)."""
    transform = getattr(dataset, "transform", None)
    if transform is None:
        return ()
    package = type(transform).__module__.split(".")[0]
    return () if package in ("builtins", "__main__") else (package,)
