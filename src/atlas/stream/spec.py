"""What one sample reads (:class:`SampleSpec`) and an epoch's samples (:class:`SamplePlan`).

Also the argument checks the samplers share (sizes, counts, levels) and each volume's shape
at a pyramid level (:func:`level_shapes`, by the pyramid rule of decision 0003).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream.table import VolumeTable

__all__ = ["SamplePlan", "SampleSpec", "level_shapes"]


@dataclass(frozen=True)
class SampleSpec:
    """One sample of an epoch: what to read.

    ``start``/``stop`` are the voxel box at ``level`` (z, y, x, stop exclusive; it may reach
    outside the volume, where the reader pads); :attr:`region` gives it as an
    :class:`atlas.read.Region`.
    """

    index: int
    volume: int
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    level: int
    label: str | None

    @property
    def region(self) -> Any:
        """The box as an :class:`atlas.read.Region`."""
        from atlas.read import Region

        return Region(self.start, self.stop)

    @property
    def size(self) -> tuple[int, ...]:
        """Voxels along each axis."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))


def _size3(size: Any, what: str = "size") -> tuple[int, int, int]:
    """A patch size as three positive ints (an int means a cube)."""
    values = (size, size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    try:
        out = tuple(values)
    except TypeError:
        raise InvalidInput(f"{what} must be an int or three ints, got {size!r}") from None
    if len(out) != 3 or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) for v in out
    ):
        raise InvalidInput(f"{what} must be an int or three ints (z, y, x), got {size!r}")
    if any(int(v) <= 0 for v in out):
        raise InvalidInput(f"{what} must be positive on every axis, got {size!r}")
    return (int(out[0]), int(out[1]), int(out[2]))


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _level(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 0:
        raise InvalidInput(f"level must be an integer >= 0, got {value!r}")
    return int(value)


def level_shapes(table: VolumeTable, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Each volume's shape at ``level`` and its factors from level 0, by the pyramid rule.

    Raises InvalidInput naming a volume that has fewer levels.
    """
    if level == 0:
        return table.shapes, np.ones_like(table.shapes)
    short = np.nonzero(table.levels <= level)[0]
    if short.size:
        v = table.volume(int(short[0]))
        raise InvalidInput(
            f"level {level} does not exist for {short.size} volume(s), e.g. "
            f"{v.series_id}/{v.volume} which has {v.levels} level(s)"
        )
    from atlas.ome.pyramid import plan_levels

    shapes = np.empty_like(table.shapes)
    factors = np.empty_like(table.shapes)
    for i in range(len(table)):
        planned = plan_levels(
            tuple(int(s) for s in table.shapes[i]),
            tuple(float(s) for s in table.spacings[i]),
            max_levels=int(table.levels[i]),
        )
        chosen = planned[min(level, len(planned) - 1)]
        shapes[i] = chosen.shape
        factors[i] = chosen.factors
    return shapes, factors


@dataclass
class SamplePlan:
    """An epoch's samples in canonical (storage) order, computed on demand.

    ``offsets[v]`` is the canonical id of volume ``v``'s first sample; ``len(plan)`` the epoch's
    number of samples. ``counts`` says what was skipped (e.g. a label with no box in a volume).
    """

    sampler: Any  # a Sampler (atlas.stream.samplers)
    table: VolumeTable
    seed: int
    epoch: int
    offsets: np.ndarray
    counts: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def volumes_of(self, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(volume index, rank of the sample within its volume)`` of canonical ids."""
        c = np.asarray(canonical, dtype=np.int64)
        if c.size and (c.min() < 0 or c.max() >= len(self)):
            raise InvalidInput(f"sample ids out of range 0..{len(self) - 1}")
        v = np.searchsorted(self.offsets, c, side="right") - 1
        return v, c - self.offsets[v]

    def boxes(self, canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(volume, start (n, 3), label code)`` of canonical ids (label code -1: none)."""
        c = np.asarray(canonical, dtype=np.int64).reshape(-1)
        v, k = self.volumes_of(c)
        start, label = self.sampler._starts(self, c, v, k)
        return v, start, label

    def specs(self, canonical: Sequence[int] | np.ndarray, index: Any = None) -> list[SampleSpec]:
        """:class:`SampleSpec` of canonical ids; ``index`` gives their epoch positions."""
        c = np.asarray(canonical, dtype=np.int64).reshape(-1)
        pos = c if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
        v, start, label = self.boxes(c)
        size = np.asarray(self.sampler._sizes(self, v), dtype=np.int64)
        stop = start + size
        names = self.context["label_images"]
        level = self.sampler.level
        return [
            SampleSpec(
                index=int(pos[i]),
                volume=int(v[i]),
                start=(int(start[i, 0]), int(start[i, 1]), int(start[i, 2])),
                stop=(int(stop[i, 0]), int(stop[i, 1]), int(stop[i, 2])),
                level=level,
                label=names[int(label[i])] if label[i] >= 0 else None,
            )
            for i in range(c.size)
        ]
