"""One epoch: the table, the sampler's plan and the shuffled order, addressed by position.

::

    table = plan_epochs(atlas, 'modality == "CT"', subset="train")
    epoch = EpochPlan(table, PatchSampler(64, per_volume=4), seed=7, epoch=3)
    epoch[0]                                   # SampleSpec of global position 0
    for specs in epoch.iter_specs(shard_for(rank, world, worker, workers, len(epoch))):
        ...                                    # what this worker reads, in order

Position ``i`` of the epoch is canonical sample ``order[i]``; its box depends only on
``(seed, epoch, order[i])``, so every process that builds the same ``EpochPlan`` gets the same
sample at the same position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream.order import EpochOrder
from atlas.stream.samplers import SamplePlan, SampleSpec
from atlas.stream.table import Volume, VolumeTable

__all__ = ["EpochPlan"]


class EpochPlan:
    """The samples of one epoch in their global order.

    Parameters
    ----------
    table : VolumeTable
        What to sample from.
    sampler : Sampler
        How (see :mod:`atlas.stream.samplers`).
    seed, epoch : int
        Everything random follows from these two numbers.
    order : EpochOrder, optional
        How samples are shuffled (default :class:`EpochOrder`; ``EpochOrder(shuffle=False)``
        keeps storage order, e.g. for grid inference).

    Raises
    ------
    InvalidInput
        The sampler cannot sample this table (unknown label, patch larger than a volume
        without padding, missing level), raised here, before any worker starts.
    """

    def __init__(
        self,
        table: VolumeTable,
        sampler: Any,
        *,
        seed: int = 0,
        epoch: int = 0,
        order: EpochOrder | None = None,
    ) -> None:
        if not isinstance(table, VolumeTable):
            raise InvalidInput(f"EpochPlan needs a VolumeTable, got {type(table).__name__}")
        self.table = table
        self.sampler = sampler
        self.order = order or EpochOrder()
        self.plan: SamplePlan = sampler.plan(table, seed, epoch)
        self.seed = self.plan.seed
        self.epoch = self.plan.epoch
        self._perm: np.ndarray | None = None

    @property
    def volumes(self) -> Sequence[Volume]:
        """The table's volumes (``SampleSpec.volume`` indexes them)."""
        return self.table.volumes

    @property
    def counts(self) -> dict[str, Any]:
        """What the sampler and the plan counted (and skipped)."""
        return {**self.plan.counts, "plan": self.table.counts.as_dict()}

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def permutation(self) -> np.ndarray:
        """Global position → canonical sample id (computed once)."""
        if self._perm is None:
            self._perm = self.order.permutation(len(self.plan), self.seed, self.epoch)
        return self._perm

    def canonical(self, positions: Any) -> np.ndarray:
        """Canonical ids of global positions."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= len(self)):
            raise InvalidInput(f"positions out of range 0..{len(self) - 1}")
        return self.permutation[pos]

    def specs(self, positions: Any) -> list[SampleSpec]:
        """:class:`SampleSpec` of global positions, in the order given."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        return self.plan.specs(self.canonical(pos), index=pos)

    def __getitem__(self, i: int) -> SampleSpec:
        return self.specs([int(i)])[0]

    def iter_specs(self, positions: Any, chunk: int = 1024) -> Iterator[list[SampleSpec]]:
        """Specs of ``positions`` in chunks of at most ``chunk`` (bounded memory)."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        for i in range(0, pos.size, max(1, int(chunk))):
            yield self.specs(pos[i : i + chunk])
