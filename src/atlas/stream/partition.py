"""Which positions of an epoch's global order each rank and each DataLoader worker reads.

The epoch's global order (positions ``0..n-1``) is fixed by ``(seed, epoch)`` alone. From
position ``start`` on (what a resumed run has not consumed yet):

- rank ``r`` of ``world`` takes every ``world``-th position, starting at ``start + r``, like
  ``torch.utils.data.DistributedSampler`` but without padding or repeating samples;
- the rank's positions are cut into batches of ``batch``; worker ``w`` of ``workers`` takes
  batches ``w, w + workers, ...`` — the order in which a ``DataLoader`` collects its workers'
  batches (round robin).

So at step ``s`` the ranks together hold the global positions ``start + s * world * batch``
up to ``start + (s + 1) * world * batch``: the sequence of global batches is the same whatever
``world`` and ``workers`` are (for the same ``world * batch``), and the union over every rank and
worker is exactly the positions from ``start`` on, each once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.errors import InvalidInput

__all__ = ["rank_positions", "shard_for", "step_positions"]


def _int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < low:
        raise InvalidInput(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check(rank: int, world: int, n: int, start: int) -> tuple[int, int, int, int]:
    world = _int(world, "world size", 1)
    rank = _int(rank, "rank", 0)
    if rank >= world:
        raise InvalidInput(f"rank {rank} is not below the world size {world}")
    n = _int(n, "number of samples", 0)
    start = _int(start, "start", 0)
    if start > n:
        raise InvalidInput(f"start {start} is past the end of the epoch ({n} samples)")
    return rank, world, n, start


def rank_positions(rank: int, world: int, n: int, start: int = 0) -> range:
    """Global positions of one rank, in the order it reads them."""
    rank, world, n, start = _check(rank, world, n, start)
    return range(start + rank, n, world)


def shard_for(
    rank: int, world: int, worker: int, workers: int, n: int, start: int = 0, *, batch: int = 1
) -> np.ndarray:
    """Global positions one DataLoader worker of one rank reads, in order.

    Parameters
    ----------
    rank, world : int
        This process's rank and the number of ranks.
    worker, workers : int
        This DataLoader worker's id and the number of workers (``workers=1`` without
        worker processes).
    n : int
        Samples in the epoch.
    start : int
        First global position not consumed yet (0 for a fresh epoch).
    batch : int
        The DataLoader's batch size: workers take whole batches in turn.

    Returns
    -------
    numpy.ndarray
        int64 global positions.
    """
    rank, world, n, start = _check(rank, world, n, start)
    workers = _int(workers, "number of workers", 1)
    worker = _int(worker, "worker", 0)
    if worker >= workers:
        raise InvalidInput(f"worker {worker} is not below the number of workers {workers}")
    batch = _int(batch, "batch", 1)
    mine = np.arange(start + rank, n, world, dtype=np.int64)
    which = (np.arange(mine.size, dtype=np.int64) // batch) % workers
    return mine[which == worker]


def step_positions(world: int, batch: int, n: int, start: int = 0) -> list[np.ndarray]:
    """The global positions consumed at each training step (all ranks together)."""
    _, world, n, start = _check(0, world, n, start)
    batch = _int(batch, "batch", 1)
    per_step = world * batch
    return [np.arange(s, min(s + per_step, n), dtype=np.int64) for s in range(start, n, per_step)]
