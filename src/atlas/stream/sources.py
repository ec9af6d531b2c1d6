"""What an :class:`~atlas.stream.AtlasDataset` is built from and where it runs.

:func:`table_from` turns the dataset's source (a catalog opened for training, or a planned
:class:`~atlas.stream.VolumeTable`) into the plan's table and the sites' stores;
:func:`rank_world` finds this process's rank (from ``torch.distributed`` or the caller);
:func:`check_count` validates the integer options, naming the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.storage import Store
from atlas.stream.splits import Split
from atlas.stream.table import TRAINING_PURPOSE, VolumeTable, plan_epochs

__all__ = ["check_count", "rank_world", "table_from"]


def check_count(value: Any, what: str, low: int) -> int:
    """``value`` as an int, if it is an integer of at least ``low`` (else InvalidInput)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < low:
        raise InvalidInput(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def table_from(
    source: Any,
    where: str | None,
    release: str | None,
    split: Split | None,
    subset: str | None,
) -> tuple[VolumeTable, dict[str, Store]]:
    """The plan's table, and the stores of its sites (for an :class:`Atlas` source)."""
    from atlas.index.catalog import Atlas

    if isinstance(source, VolumeTable):
        if where is not None or release is not None:
            raise InvalidInput(
                "where= and release= select from a catalog; a VolumeTable is already planned "
                "(pass the Atlas instead, or plan it with atlas.stream.plan_epochs)"
            )
        return source, {}
    if isinstance(source, Atlas):
        if source.purpose != TRAINING_PURPOSE:
            raise InvalidInput(
                f"streaming for training needs a catalog opened with purpose "
                f"{TRAINING_PURPOSE!r}, not {source.purpose!r}: open_atlas(stores, "
                f"purpose={TRAINING_PURPOSE!r})"
            )
        table = plan_epochs(source, where, release=release, split=split, subset=subset)
        return table, {name: idx.store for name, idx in source.sites.items()}
    raise InvalidInput(
        f"AtlasDataset needs an Atlas (open_atlas(..., purpose={TRAINING_PURPOSE!r})) or a "
        f"VolumeTable, got {type(source).__name__}"
    )


def rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given (both or neither), else from ``torch.distributed``."""
    if rank is None and world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise InvalidInput("give both rank= and world_size=, or neither")
    world = check_count(world_size, "world_size", 1)
    r = check_count(rank, "rank", 0)
    if r >= world:
        raise InvalidInput(f"rank {r} is not below world_size {world}")
    return r, world
