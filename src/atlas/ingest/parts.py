"""Regularly spaced parts of a stack.

How a series with missing slices or varying spacing is written without misplacing a slice.

An OME-Zarr image (and its ``atlas.affine``) places slice ``k`` at ``origin + k * step`` along
the slice normal. A stack whose slices are not evenly spaced, because instances are missing
or the acquisition changed its spacing part-way, cannot be written as one such image: every
slice after the first irregular step would land in the wrong place. Ingest therefore splits
such a stack into the fewest runs of consecutive slices that are each evenly spaced
(:func:`regular_runs`, greedy from the first slice) and writes each run as an image of its own,
"part k of n" of the series, with the original slice range and positions recorded
(``docs/decisions/0015-regular-volumes-and-invalid-geometry.md``). No slice is invented,
interpolated or dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from atlas.ingest.geometry import SLICE_POSITION_TOLERANCE, on_grid, stack_geometry
from atlas.ingest.model import Volume

__all__ = ["VolumePart", "regular_parts", "regular_runs"]


@dataclass(frozen=True, repr=False)
class VolumePart:
    """One evenly spaced run of slices ``[start, stop)`` of a loaded stack."""

    volume: Volume
    #: first and one-past-last z index in the whole (sorted) stack
    start: int
    stop: int
    #: 1-based part number and the number of parts of the stack
    index: int
    count: int
    #: why the stack was split (``None`` for a stack written whole)
    reason: str | None = None

    def attributes(self) -> dict[str, Any] | None:
        """The relation to the other parts, for the image's ``atlas`` attributes."""
        if self.count == 1:
            return None
        positions = self.volume.slice_positions
        return {
            "index": self.index,
            "count": self.count,
            "first_slice": self.start,
            "last_slice": self.stop - 1,
            "positions_mm": [float(positions[0]), float(positions[-1])] if positions else None,
            "reason": self.reason,
        }

    def __repr__(self) -> str:
        return f"VolumePart({self.index}/{self.count}, slices {self.start}..{self.stop - 1})"


def regular_runs(positions: Sequence[float]) -> list[tuple[int, int]]:
    """Split sorted positions into consecutive runs ``[start, stop)`` that are evenly spaced.

    Greedy from the first position: a run grows while all its positions stay on one grid
    (:func:`atlas.ingest.geometry.on_grid`). A slice stands alone when the step after it is
    off the stack's median step but the next one is on it (an isolated slice before a gap is
    not paired with the slice beyond the gap).
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = int(pos.size)
    if on_grid(pos):
        return [(0, n)] if n else []
    median = float(np.median(np.abs(np.diff(pos))))

    def usual(k: int) -> bool:  # is the step from slice k to k + 1 the median step?
        return abs(abs(float(pos[k + 1] - pos[k])) - median) <= SLICE_POSITION_TOLERANCE * median

    runs: list[tuple[int, int]] = []
    start = 0
    while start < n:
        if start + 2 < n and not usual(start) and usual(start + 1):
            runs.append((start, start + 1))
            start += 1
            continue
        stop = min(start + 2, n)
        while stop < n and on_grid(pos[start : stop + 1]):
            stop += 1
        runs.append((start, stop))
        start = stop
    return runs


def _slice_z(pixels: np.ndarray, axes: str, start: int, stop: int) -> np.ndarray:
    return pixels[:, start:stop] if axes.startswith("c") else pixels[start:stop]


def regular_parts(volume: Volume) -> list[VolumePart]:
    """``volume`` as one part, or split into evenly spaced parts (pixels are views).

    A stack is split only when it has patient geometry (:attr:`Volume.slice_origins`) and its
    positions along the normal are not on one grid. Each part's origin is the *Image Position
    (Patient)* of its first slice and its step the spacing of its own run, so
    ``affine @ (k, 0, 0, 1)`` is slice ``k``'s *Image Position (Patient)*. A single-slice part
    keeps the stack's median step as its nominal slice spacing.
    """
    nz = len(volume.slice_positions)
    origins = volume.slice_origins
    if origins is None or nz < 3 or len(origins) != nz:
        return [VolumePart(volume, 0, nz, 1, 1)]
    runs = regular_runs(volume.slice_positions)
    if len(runs) == 1:
        return [VolumePart(volume, 0, nz, 1, 1)]
    direction = np.asarray(volume.direction, dtype=np.float64)
    iop = (*direction[:, 2].tolist(), *direction[:, 1].tolist())
    reason = volume.spacing_note or "slices are not evenly spaced"
    parts: list[VolumePart] = []
    for k, (start, stop) in enumerate(runs, start=1):
        geometry = stack_geometry(
            origins[start:stop], iop, volume.spacing[1:], volume.spacing[0], stop - start
        )
        part = replace(
            volume,
            pixels=_slice_z(volume.pixels, volume.axes, start, stop),
            spacing=geometry.spacing,
            origin=geometry.origin,
            direction=geometry.direction,
            regularly_spaced=geometry.regularly_spaced,
            slice_positions=list(volume.slice_positions[start:stop]),
            frames=list(volume.frames[start:stop]),
            instances=(
                list(volume.instances[start:stop])
                if len(volume.instances) == nz
                else list(volume.instances)
            ),
            spacing_note=geometry.note,
            slice_origins=list(origins[start:stop]),
            slice_step=geometry.slice_step,
        )
        parts.append(VolumePart(part, start, stop, k, len(runs), reason))
    return parts
