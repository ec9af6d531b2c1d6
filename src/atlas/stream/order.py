"""The order of an epoch: block shuffle, then a bounded shuffle buffer (decision 0047).

Samples arrive in storage order (canonical ids: volume after volume, site after site). A full
random permutation would make every read land on a different image shard, so the chunk cache
never hits; storage order would make training see one volume at a time. The order here does
both things at once:

1. **block shuffle**: the canonical ids are cut into blocks of ``block`` consecutive samples,
   and the blocks are permuted (a permutation keyed by ``(seed, epoch)``);
2. **shuffle buffer**: the block stream passes through a buffer of ``buffer`` slots; each step
   emits a random slot's sample and puts the next sample of the stream in its place (the
   reservoir of tf.data's ``shuffle``), so no sample moves earlier than ``buffer`` positions.

Both steps are pure functions of ``(seed, epoch)`` computed with numpy (the buffer's steps are
grouped by slot and solved with one stable sort), so every process gets the same order, and
the next epoch gets another. :meth:`EpochOrder.quality` measures what is left of the storage
order: Spearman's rank correlation of output position against canonical id (0: none left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream import counter

__all__ = ["EpochOrder", "adjacent_same", "spearman"]


def _positive(value: Any, what: str, zero: bool = False) -> int:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < low:
        raise InvalidInput(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EpochOrder:
    """Deterministic epoch order of ``n`` samples from ``(seed, epoch)``.

    Parameters
    ----------
    block : int
        Consecutive samples (in storage order) that stay together; 1 permutes single samples.
    buffer : int
        Slots of the shuffle buffer; 1 leaves the block order as it is.
    shuffle : bool
        ``False``: storage order (inference, evaluation).
    """

    block: int = 16
    buffer: int = 256
    shuffle: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block", _positive(self.block, "block"))
        object.__setattr__(self, "buffer", _positive(self.buffer, "buffer"))
        if not isinstance(self.shuffle, bool):
            raise InvalidInput(f"shuffle must be True or False, got {self.shuffle!r}")

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (for a stream's state)."""
        return {"block": self.block, "buffer": self.buffer, "shuffle": self.shuffle}

    def blocks(self, n: int, seed: int, epoch: int) -> np.ndarray:
        """Canonical ids after the block shuffle (before the buffer)."""
        n = _positive(n, "number of samples", zero=True)
        ids = np.arange(n, dtype=np.int64)
        if not self.shuffle or self.block >= n:
            return ids  # storage order, or one block: nothing to permute
        n_blocks = -(-n // self.block)
        keys = counter.mix(seed, epoch, counter.STREAMS["order.block"], np.arange(n_blocks))
        perm = np.argsort(keys, kind="stable")
        block_of = np.repeat(perm, self.block)
        offset = np.tile(np.arange(self.block, dtype=np.int64), n_blocks)
        out = block_of * self.block + offset
        return out[out < n]

    def permutation(self, n: int, seed: int, epoch: int) -> np.ndarray:
        """Output position → canonical id for all ``n`` samples (a permutation of ``0..n-1``)."""
        stream = self.blocks(n, seed, epoch)
        if not self.shuffle or n <= 1 or self.buffer <= 1:
            return stream
        return _buffer(stream, min(self.buffer, n), seed, epoch)

    def quality(self, n: int, seed: int, epoch: int) -> float:
        """Spearman's rank correlation of output order against storage order (0 is best)."""
        return spearman(self.permutation(n, seed, epoch))


def _buffer(stream: np.ndarray, slots: int, seed: int, epoch: int) -> np.ndarray:
    """The output of a ``slots``-slot shuffle buffer fed ``stream``.

    Step ``t`` (for ``t >= slots``) emits the occupant of slot ``r_t`` and stores ``stream[t]``
    there; at the end the remaining occupants leave in a random order. The occupant emitted at
    step ``t`` is the item stored by the previous step that chose the same slot (or the slot's
    first item), which one stable sort by slot finds for all steps at once.
    """
    n = stream.size
    steps = np.arange(slots, n, dtype=np.int64)
    slot = counter.integers(slots, seed, epoch, counter.STREAMS["order.buffer"], steps)
    by_slot = np.lexsort((steps, slot))  # steps grouped by slot, in time order
    s_sorted, t_sorted = slot[by_slot], steps[by_slot]
    first = np.ones(s_sorted.size, dtype=bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    # item index (into stream) emitted at each step: the previous item stored in that slot
    prev = np.empty(s_sorted.size, dtype=np.int64)
    prev[first] = s_sorted[first]  # the slot's initial item is stream[slot]
    prev[~first] = t_sorted[np.nonzero(~first)[0] - 1]
    emitted = np.empty(n - slots, dtype=np.int64)
    emitted[t_sorted - slots] = prev
    # what stays in each slot at the end: the last item stored there, or its initial item
    last = np.arange(slots, dtype=np.int64)
    ends = np.ones(s_sorted.size, dtype=bool)
    ends[:-1] = s_sorted[1:] != s_sorted[:-1]
    last[s_sorted[ends]] = t_sorted[ends]
    flush_keys = counter.mix(seed, epoch, counter.STREAMS["order.flush"], np.arange(slots))
    tail = last[np.argsort(flush_keys, kind="stable")]
    return stream[np.concatenate([emitted, tail])]


def spearman(order: np.ndarray) -> float:
    """Spearman's rank correlation between output position and value of a permutation."""
    n = int(np.asarray(order).size)
    if n < 2:
        return 0.0
    pos = np.arange(n, dtype=np.float64)
    val = np.asarray(order, dtype=np.float64)
    d = pos - val  # for a permutation of 0..n-1 the ranks are the values themselves
    return float(1.0 - 6.0 * np.dot(d, d) / (n * (n * n - 1.0)))


def adjacent_same(order: np.ndarray, group: np.ndarray) -> float:
    """Fraction of neighbouring outputs from the same group (e.g. volume): the locality left."""
    order = np.asarray(order)
    if order.size < 2:
        return 0.0
    g = np.asarray(group)[order]
    return float(np.mean(g[1:] == g[:-1]))
