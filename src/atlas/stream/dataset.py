"""The PyTorch dataset: :class:`AtlasDataset` streams an epoch plan as sample dicts.

::

    atlas = open_atlas(stores, purpose="ai-training")
    ds = AtlasDataset(atlas, PatchSampler(64, per_volume=4), where='modality == "CT"', seed=7)
    loader = ds.loader(batch_size=8, num_workers=2)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for batch in loader:
            ...                                  # batch["image"]: [8, 1, 64, 64, 64]

Each process (the main one, or each DataLoader worker) reads its share of the epoch's global
order (:func:`atlas.stream.shard_for`: whole batches in turn, so the DataLoader's round robin
restores the global order) in read batches of ``batch_reads`` samples through
:meth:`atlas.read.Reader.read_many`, on a background thread that reads ahead up to
``prefetch_bytes`` (:mod:`atlas.stream.prefetch`). The reader's chunk cache and the read-ahead
budget are split between the workers, so memory stays bounded as workers are added (decision
0048). A site that fails after its store's retry policy has its samples skipped and counted
(:meth:`AtlasDataset.report`), or the epoch raises with ``strict=True`` (decision 0049).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from atlas.errors import CorruptData, Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.read import ImageRef, Reader, ReadRequest
from atlas.stream.epoch import EpochPlan
from atlas.stream.order import EpochOrder
from atlas.stream.partition import shard_for
from atlas.stream.prefetch import prefetch
from atlas.stream.report import EpochReport, SiteCounters
from atlas.stream.samplers import AXES
from atlas.stream.sources import check_count, rank_world, table_from
from atlas.stream.spec import SampleSpec
from atlas.stream.state import StreamState
from atlas.stream.table import Volume
from atlas.stream.transforms import apply_transform, sample_seed

if TYPE_CHECKING:
    from atlas.read import Patch
    from atlas.storage import Store
    from atlas.stream.loader import StreamLoader
    from atlas.stream.splits import Split

__all__ = ["DOWN_AFTER", "OPEN_FOR_WORKERS", "AtlasDataset"]

#: failed reads in a row after which a site is taken as down for the rest of the epoch (in
#: one process): its remaining samples are skipped without waiting for its retries again
DOWN_AFTER = 2
#: errors of one site (after its retries) that skip its samples; anything else is a bug
SITE_FAULTS = (StoreUnavailable, Forbidden)
#: errors of one sample (a chunk that fails its checksum, an image erased since planning)
SAMPLE_FAULTS = (CorruptData, NotFound)

#: volumes kept per process for sample metadata
_VOLUMES_KEPT = 4096
#: samples at the start of an epoch whose images the training process opens for the workers
#: (their metadata travels with the dataset, so no worker reads it again; decision 0054)
OPEN_FOR_WORKERS = 1024
#: threads opening those images (metadata reads are small: latency-bound)
_OPEN_THREADS = 16
#: an epoch order longer than this is not sent to workers (they compute it again)
_PERMUTATION_SENT = 1 << 20
#: dtypes torch handles poorly, and what they are widened to
_WIDEN: dict[np.dtype, np.dtype] = {
    np.dtype("uint16"): np.dtype("int32"),
    np.dtype("uint32"): np.dtype("int64"),
}

Sample = dict[str, Any]
_Read = tuple[SampleSpec, "Patch", "Patch | None"]


class AtlasDataset(IterableDataset):
    """Samples of a catalog query as dicts of tensors, for a ``torch.utils.data.DataLoader``.

    Parameters
    ----------
    source
        An :class:`~atlas.index.catalog.Atlas` opened with purpose ``ai-training`` (planned
        here with ``where``, ``release``, ``split`` and ``subset``), or a
        :class:`~atlas.stream.VolumeTable` planned already.
    sampler
        What each sample reads (:class:`~atlas.stream.PatchSampler`, ``SliceSampler``,
        ``BalancedSampler``, ``GridSampler``).
    where, release, split, subset
        The catalog filter, the release whose pinned versions to read, the subject split and
        which part of it (``"train"``; ``None`` for every subject).
    seed
        Everything random (samples, order, transforms) follows from ``(seed, epoch)``.
    reader, stores
        How to read: a :class:`~atlas.read.Reader`, or stores per site to make one with
        (default: the Atlas's own stores).
    batch_reads
        Samples per :meth:`~atlas.read.Reader.read_many` call (reads in flight together).
    prefetch_bytes
        Bytes read ahead of the training loop, over all workers together.
    strict
        Raise when a site fails (after its retries) instead of skipping its samples.
    transform
        Applied to each sample dict in the worker (e.g. a MONAI ``Compose`` of dictionary
        transforms); its randomness is seeded per sample from ``(seed, epoch, index)``, so
        augmentation too is the same whatever the number of workers.
    batch_size
        The DataLoader batch size the global order is kept for (:meth:`loader` sets it).
    order
        The shuffle (default :class:`~atlas.stream.EpochOrder`).
    rank, world_size
        This process's place among distributed ranks (default: from ``torch.distributed``
        when it is initialised, else 0 of 1).
    cache_bytes
        Chunk cache over all workers together (default: the reader's ``cache_bytes``).

    Raises
    ------
    InvalidInput, NotFound
        Any bad input, before any worker starts: a catalog not opened for ``ai-training``, an
        unknown release, a sampler that cannot sample the plan (a label no image has, a patch
        larger than a volume, a missing level), a site without a store, bad counts.
    """

    def __init__(
        self,
        source: Any,
        sampler: Any,
        *,
        where: str | None = None,
        release: str | None = None,
        split: Split | None = None,
        subset: str | None = "train",
        seed: int = 0,
        reader: Reader | None = None,
        stores: Mapping[str, Store] | None = None,
        batch_reads: int = 32,
        prefetch_bytes: int = 256 << 20,
        strict: bool = False,
        transform: Callable[[Sample], Any] | None = None,
        batch_size: int = 1,
        order: EpochOrder | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_reads = check_count(batch_reads, "batch_reads", 1)
        self.prefetch_bytes = check_count(prefetch_bytes, "prefetch_bytes", 0)
        self.batch_size = check_count(batch_size, "batch_size", 1)
        seed = check_count(seed, "seed", 0)
        if transform is not None and not callable(transform):
            raise InvalidInput(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.strict = bool(strict)
        self.rank, self.world_size = rank_world(rank, world_size)
        table, atlas_stores = table_from(source, where, release, split, subset)
        self.table = table
        self.sampler = sampler
        self.order = order or EpochOrder()
        if reader is not None and stores is not None:
            raise InvalidInput("give reader= or stores=, not both")
        if reader is None:
            chosen = dict(stores) if stores is not None else atlas_stores
            if not chosen:
                raise InvalidInput(
                    "a VolumeTable does not say how to read its sites: pass reader= or stores="
                )
            reader = Reader(chosen)
        if not isinstance(reader, Reader):
            raise InvalidInput(f"reader must be an atlas.read.Reader, got {type(reader).__name__}")
        self.reader = reader
        self.cache_bytes = (
            reader.cache_bytes
            if cache_bytes is None
            else check_count(cache_bytes, "cache_bytes", 0)
        )
        sites = sorted(set(table.arrow["site"].unique().to_pylist()))
        missing = [s for s in sites if s not in reader.stores]
        if missing:
            raise NotFound(
                f"no store for site(s) {missing} of the plan; the reader has "
                f"{sorted(reader.stores)}"
            )
        self._slice_axis = AXES[sampler.axis] if getattr(sampler, "name", "") == "slice" else None
        # planning epoch 0 checks the sampler against the table here, before any worker starts
        self._epoch: EpochPlan | None = None
        self._volumes: dict[int, Volume] = {}
        self._local_reader: Reader | None = None
        #: images opened for the workers (image ref -> opened image), sent with the dataset
        self._opened: dict[ImageRef, Any] = {}
        self._seeded: Reader | None = None
        self.state = StreamState(
            epoch=0,
            seed=seed,
            consumed=0,
            sampler=sampler.params(),
            order=self.order.params(),
            plan=table.fingerprint(),
        )
        self._plan(0)
        self.counters = SiteCounters(sites)

    # -- state ----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch being read."""
        return self.state.epoch

    @property
    def seed(self) -> int:
        """The stream's seed."""
        return self.state.seed

    def set_epoch(self, epoch: int) -> None:
        """Read ``epoch`` next, from its start (its order and samples follow from the seed)."""
        epoch = check_count(epoch, "epoch", 0)
        if epoch != self.state.epoch or self.state.consumed:
            self.state = StreamState(
                epoch=epoch,
                seed=self.state.seed,
                consumed=0,
                sampler=self.state.sampler,
                order=self.state.order,
                plan=self.state.plan,
            )
        self._plan(epoch)
        self.counters.reset(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, seed, samples consumed and the sampler's parameters (JSON-able)."""
        return self.state.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (any number of workers).

        Raises
        ------
        InvalidInput
            The state is malformed, was taken on another plan, or with another sampler or
            shuffle than this dataset's.
        """
        restored = StreamState.from_state_dict(state)
        restored.check_plan(self.state.plan)
        for what in ("sampler", "order"):
            if dict(getattr(restored, what)) != dict(getattr(self.state, what)):
                raise InvalidInput(
                    f"this stream state was taken with another {what} "
                    f"({dict(getattr(restored, what))}); this dataset has "
                    f"{dict(getattr(self.state, what))}"
                )
        self._plan(restored.epoch)
        if restored.consumed > len(self._plan(restored.epoch)):
            raise InvalidInput(
                f"stream state consumed {restored.consumed} samples of an epoch of "
                f"{len(self._plan(restored.epoch))}"
            )
        self.state = restored
        self.counters.reset(restored.epoch)

    def mark_consumed(self, consumed: int) -> None:
        """Record that the first ``consumed`` global positions of the epoch were delivered."""
        self.state = StreamState(
            epoch=self.state.epoch,
            seed=self.state.seed,
            consumed=min(int(consumed), len(self)),
            sampler=self.state.sampler,
            order=self.state.order,
            plan=self.state.plan,
        )

    def report(self) -> EpochReport:
        """Per-site counts of the current epoch: samples read, skipped, failed reads."""
        return self.counters.report()

    # -- planning -------------------------------------------------------------------------
    def _plan(self, epoch: int) -> EpochPlan:
        e = self._epoch
        if e is None or e.epoch != epoch or e.seed != self.state.seed:
            e = self._epoch = EpochPlan(
                self.table, self.sampler, seed=self.state.seed, epoch=epoch, order=self.order
            )
        return e

    def __len__(self) -> int:
        """Samples in the current epoch (all ranks together)."""
        return len(self._plan(self.state.epoch))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # the planned epoch travels (a worker need not plan it again), its order only when
        # small: a long one is cheaper to compute again than to pickle into every worker
        epoch = self._epoch
        if epoch is not None and epoch._perm is not None and epoch._perm.size > _PERMUTATION_SENT:
            epoch = copy.copy(epoch)
            epoch._perm = None
        state["_epoch"] = epoch
        state["_volumes"] = {}
        state["_local_reader"] = None
        state["_seeded"] = None
        return state

    def open_for_workers(self, samples: int = OPEN_FOR_WORKERS) -> int:
        """Open the images of the epoch's first ``samples`` samples here, for the workers.

        Their metadata (levels, chunks, affine: no pixel, no credential) then travels to each
        DataLoader worker with the dataset, so a worker starts reading at once instead of
        reading every image's metadata again, one after the other (what dominated a
        worker's start on a remote site). The images are opened on a few threads at once.
        Best effort: an image that cannot be opened is left for the worker to meet (and
        count). :class:`StreamLoader` calls this before it starts workers.

        Returns
        -------
        int
            Images (and label images) known to the workers now.
        """
        epoch = self._plan(self.state.epoch)
        n = min(len(epoch), check_count(samples, "samples", 0))
        start = min(self.state.consumed, len(epoch))
        positions = np.arange(start, min(len(epoch), start + n), dtype=np.int64)
        refs = list(
            dict.fromkeys(r.image for spec in epoch.specs(positions) for r in self._requests(spec))
        )
        missing = [r for r in refs if r not in self._opened]
        if missing:
            reader = self.reader

            def open_one(ref: ImageRef) -> tuple[ImageRef, Any]:
                try:
                    return ref, (reader.node(ref), reader.info(ref))
                except (*SITE_FAULTS, *SAMPLE_FAULTS, InvalidInput):
                    return ref, None

            threads = max(1, min(_OPEN_THREADS, len(missing)))
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for ref, node in pool.map(open_one, missing):
                    if node is not None:
                        self._opened[ref] = node
        return len(self._opened)

    def positions(self, worker: int = 0, workers: int = 1) -> np.ndarray:
        """Global positions this rank's ``worker`` reads from the current state on."""
        return shard_for(
            self.rank,
            self.world_size,
            worker,
            workers,
            len(self),
            self.state.consumed,
            batch=self.batch_size,
        )

    # -- reading --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:  # a worker (maybe kept from an earlier epoch): where to start
            self._follow(self.counters.published())
        epoch = self._plan(self.state.epoch)
        reader = self._worker_reader(workers)
        positions = self.positions(worker, workers)
        chunks = _read_chunks(positions, self.batch_size, self.batch_reads)
        down: dict[str, int] = {}
        budget = self.prefetch_bytes // workers
        ahead = prefetch(
            (epoch.specs(c) for c in chunks),
            lambda specs: self._read_chunk(reader, specs, down),
            lambda reads: sum(_nbytes(r) for r in reads),
            budget,
        )
        in_main = info is None
        try:
            for reads in ahead:
                for spec, image, label in reads:
                    sample = self._sample(spec, image, label, epoch)
                    if in_main:  # workers' copies are not the user's: the loader counts
                        self.mark_consumed(spec.index + 1)
                    yield sample
        finally:
            ahead.close()

    def _follow(self, published: tuple[int, int, int, int] | None) -> None:
        """Take the epoch, seed, consumed count and batch size the loader published."""
        if published is None:
            return
        epoch, seed, consumed, batch = published
        self.state = replace(self.state, epoch=epoch, seed=seed, consumed=consumed)
        self.batch_size = batch

    def _worker_reader(self, workers: int) -> Reader:
        """The reader of this process: the cache budget split between the workers.

        It starts with the images the training process opened for the workers.
        """
        share = self.cache_bytes // max(1, workers)
        if share == self.reader.cache_bytes:
            reader = self.reader
        else:
            if self._local_reader is None or self._local_reader.cache_bytes != share:
                options = {**self.reader.options(), "cache_bytes": share}
                self._local_reader = Reader(self.reader.stores, **options)
            reader = self._local_reader
        if self._opened and self._seeded is not reader:
            reader.add_opened(self._opened)
            self._seeded = reader
        return reader

    def _volume(self, i: int) -> Volume:
        """The table's volume ``i`` (the last few thousand kept: samples repeat volumes)."""
        found = self._volumes.get(i)
        if found is None:
            if len(self._volumes) >= _VOLUMES_KEPT:
                self._volumes.clear()
            found = self._volumes[i] = self.table.volume(i)
        return found

    def _requests(self, spec: SampleSpec) -> list[ReadRequest]:
        volume = self._volume(spec.volume)
        region = spec.region
        refs = [ImageRef(volume.site, volume.image_path)]
        if spec.label is not None:
            refs.append(ImageRef(volume.site, volume.image_path, spec.label))
        return [ReadRequest(ref, region, spec.level) for ref in refs]

    def _read_chunk(
        self, reader: Reader, specs: Sequence[SampleSpec], down: dict[str, int]
    ) -> list[_Read]:
        """Read one chunk of specs, each site on its own (a failing site fails alone)."""
        by_site: dict[str, list[SampleSpec]] = {}
        for spec in specs:
            by_site.setdefault(self._volume(spec.volume).site, []).append(spec)
        jobs = list(by_site.items())
        if len(jobs) == 1:
            results = [self._read_site(reader, jobs[0][0], jobs[0][1], down)]
        else:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                results = list(
                    pool.map(lambda job: self._read_site(reader, job[0], job[1], down), jobs)
                )
        done = {r[0].index: r for part in results for r in part}
        return [done[s.index] for s in specs if s.index in done]

    def _read_site(
        self, reader: Reader, site: str, specs: list[SampleSpec], down: dict[str, int]
    ) -> list[_Read]:
        if down.get(site, 0) >= DOWN_AFTER:
            self.counters.add(site, skipped=len(specs))
            return []
        try:
            reads = self._read_specs(reader, specs)
        except SITE_FAULTS:
            down[site] = down.get(site, 0) + 1
            self.counters.add(site, skipped=len(specs), errors=1)
            if self.strict:
                raise
            return []
        except SAMPLE_FAULTS:
            if self.strict:
                raise
            reads = self._read_one_by_one(reader, site, specs)
        down[site] = 0
        self.counters.add(
            site,
            read=len(reads),
            padded=sum(1 for _, image, _ in reads if image.padded),
            bytes=sum(_nbytes(r) for r in reads),
        )
        return reads

    def _read_specs(self, reader: Reader, specs: Sequence[SampleSpec]) -> list[_Read]:
        requests = [self._requests(s) for s in specs]
        patches = iter(reader.read_many([r for group in requests for r in group]))
        out: list[_Read] = []
        for spec, group in zip(specs, requests, strict=True):
            image = next(patches)
            label = next(patches) if len(group) > 1 else None
            out.append((spec, image, label))
        return out

    def _read_one_by_one(
        self, reader: Reader, site: str, specs: Sequence[SampleSpec]
    ) -> list[_Read]:
        """After a sample fault in a read batch: find the bad samples, keep the good ones."""
        out: list[_Read] = []
        for spec in specs:
            try:
                out.extend(self._read_specs(reader, [spec]))
            except SAMPLE_FAULTS:
                self.counters.add(site, skipped=1, errors=1)
        return out

    def _sample(
        self, spec: SampleSpec, image: Patch, label: Patch | None, epoch: EpochPlan
    ) -> Sample:
        volume = self._volume(spec.volume)
        sample: Sample = {"image": self._tensor(image.data)}
        if label is not None:
            sample["label"] = self._tensor(label.data)
        affine = np.asarray(image.affine, dtype=np.float64)
        spacing = tuple(float(s) for s in image.spacing)
        if self._slice_axis is not None:  # a 2D slice: drop the axis it was cut along
            keep = [i for i in range(4) if i != self._slice_axis]
            affine = affine[np.ix_(keep, keep)]
            spacing = tuple(s for i, s in enumerate(spacing) if i != self._slice_axis)
        sample["meta"] = {
            "site": volume.site,
            "subject_id": volume.subject_id,
            "series_id": volume.series_id,
            "volume": volume.volume,
            "volume_index": spec.volume,
            "index": spec.index,
            "epoch": epoch.epoch,
            "region": spec.region,
            "level": spec.level,
            "label_image": spec.label,
            "affine": affine,
            "spacing": spacing,
            "padded": bool(image.padded),
        }
        if self.transform is None:
            return sample
        seed = sample_seed(self.state.seed, epoch.epoch, spec.index)
        return apply_transform(self.transform, sample, seed)

    def _tensor(self, data: np.ndarray) -> torch.Tensor:
        if self._slice_axis is not None:
            data = np.squeeze(data, axis=data.ndim - 3 + self._slice_axis)
        if data.ndim in (2, 3):
            data = data[np.newaxis]  # one channel first
        wide = _WIDEN.get(data.dtype)
        if wide is not None:
            data = data.astype(wide)
        return torch.from_numpy(np.ascontiguousarray(data))

    # -- loading --------------------------------------------------------------------------
    def loader(self, batch_size: int = 8, num_workers: int = 0, **kwargs: Any) -> StreamLoader:
        """A DataLoader for this dataset that keeps the global order and counts consumption.

        See :class:`atlas.stream.loader.StreamLoader`.
        """
        from atlas.stream.loader import StreamLoader

        return StreamLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)


def _read_chunks(positions: np.ndarray, batch: int, most: int) -> list[np.ndarray]:
    """``positions`` cut into read batches, growing from one loader batch to ``most``.

    The first read is one loader batch (the first batch comes after a small read); each next
    is twice the last, up to ``most`` samples (many samples' chunks in flight at once;
    decision 0055).
    """
    out: list[np.ndarray] = []
    step, i = max(1, min(batch, most)), 0
    while i < positions.size:
        out.append(positions[i : i + step])
        i += step
        step = min(most, step * 2)
    return out


def _nbytes(read: _Read) -> int:
    _, image, label = read
    return int(image.data.nbytes) + (int(label.data.nbytes) if label is not None else 0)
