"""Sliding-window inference: :class:`GridAggregator` stitches patch predictions into volumes.

Stream a :class:`~atlas.stream.GridSampler` (patches that cover every volume, overlapping by
its ``overlap``), predict each patch, and :meth:`GridAggregator.add` the predictions with the
batch's ``meta``: each is added into its volume where it lies (the part of a padded patch
outside the volume is dropped), overlaps are averaged, and :meth:`GridAggregator.result` gives
the volume with its patient-space affine (recovered from the patches' own affines, so it is the
image's affine at the sampler's level). No torch needed: tensors are read with ``numpy``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream.spec import level_shapes
from atlas.stream.table import VolumeTable

__all__ = ["GridAggregator"]


def _numpy(value: Any) -> np.ndarray:
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor, maybe on a GPU
        value = detach().cpu().numpy()
    return np.asarray(value)


class GridAggregator:
    """Sum patch predictions per volume and average where patches overlap.

    Parameters
    ----------
    table
        The plan the grid was sampled from (gives each volume's shape at ``level``).
    level
        The sampler's pyramid level.
    dtype
        Accumulator dtype (float32 by default; the result is the mean in this dtype).
    """

    def __init__(self, table: VolumeTable, level: int = 0, dtype: Any = np.float32) -> None:
        if not isinstance(table, VolumeTable):
            raise InvalidInput(f"GridAggregator needs a VolumeTable, got {type(table).__name__}")
        self.table = table
        self.level = int(level)
        self.shapes, _ = level_shapes(table, self.level)
        self.dtype = np.dtype(dtype)
        self._sum: dict[int, np.ndarray] = {}
        self._count: dict[int, np.ndarray] = {}
        self._affine: dict[int, np.ndarray] = {}

    def add(self, prediction: Any, meta: Mapping[str, Any]) -> None:
        """Add one sample's prediction ``[C, z, y, x]``, or a batch's ``[B, C, z, y, x]``.

        ``meta`` is the sample's (or the collated batch's) ``meta``: ``volume_index``,
        ``region`` and ``affine`` are used.
        """
        pred = _numpy(prediction)
        volumes = meta["volume_index"]
        if isinstance(volumes, int | np.integer):  # one sample
            self._add_one(pred, int(volumes), meta["region"], _numpy(meta["affine"]))
            return
        regions: Sequence[Any] = meta["region"]
        affines = _numpy(meta["affine"])
        if pred.shape[0] != len(volumes):
            raise InvalidInput(
                f"prediction batch of {pred.shape[0]} for a meta batch of {len(volumes)}"
            )
        for i, v in enumerate(volumes):
            self._add_one(pred[i], int(v), regions[i], affines[i])

    def _add_one(self, pred: np.ndarray, v: int, region: Any, affine: np.ndarray) -> None:
        start = np.asarray(region[0], dtype=np.int64)
        stop = np.asarray(region[1], dtype=np.int64)
        if pred.ndim == 3:
            pred = pred[np.newaxis]
        if pred.ndim != 4 or tuple(pred.shape[1:]) != tuple(int(s) for s in stop - start):
            raise InvalidInput(
                f"prediction of shape {pred.shape} does not fit the patch {tuple(stop - start)} "
                "(expected [C, z, y, x] of the patch's size)"
            )
        shape = self.shapes[v]
        if v not in self._sum:
            self._sum[v] = np.zeros((pred.shape[0], *shape), dtype=self.dtype)
            self._count[v] = np.zeros(tuple(shape), dtype=np.uint16)
            volume_affine = np.array(affine, dtype=np.float64)
            volume_affine[:3, 3] = affine[:3, 3] - affine[:3, :3] @ start
            self._affine[v] = volume_affine
        lo = np.maximum(start, 0)
        hi = np.minimum(stop, shape)
        if np.any(hi <= lo):
            return
        dst = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        src = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True))
        self._sum[v][(slice(None), *dst)] += pred[(slice(None), *src)]
        self._count[v][dst] += 1

    @property
    def volumes(self) -> list[int]:
        """Volumes (indices into the table) that received a prediction."""
        return sorted(self._sum)

    def coverage(self, volume: int) -> float:
        """The fraction of the volume's voxels covered by at least one patch."""
        count = self._count.get(volume)
        return 0.0 if count is None else float(np.count_nonzero(count)) / count.size

    def result(self, volume: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mean prediction [C, Z, Y, X], 4x4 voxel -> patient mm affine)`` of a volume.

        Raises
        ------
        InvalidInput
            The volume received no prediction, or some of its voxels none.
        """
        if volume not in self._sum:
            raise InvalidInput(f"no prediction was added for volume {volume}")
        count = self._count[volume]
        if not count.all():
            raise InvalidInput(
                f"volume {volume}: {count.size - np.count_nonzero(count)} voxels have no "
                "prediction yet (add every patch of the grid first)"
            )
        return self._sum[volume] / count.astype(self.dtype), self._affine[volume]
