"""The voxel grid of the image volume labels are drawn on, and shared label helpers.

The helpers every label reader shares: numbers, dtypes, reading the label object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.ingest.model import Volume

__all__ = [
    "GeometryMismatch",
    "Grid",
    "as_floats",
    "is_multi",
    "label_dtype",
    "positive_number",
    "read_label_dataset",
]


class Grid:
    """The voxel grid of a :class:`Volume`: LPS points <-> continuous ``(z, y, x)`` indices.

    Slices may be irregularly spaced: the position of slice ``k`` along the slice axis is taken
    from ``volume.slice_positions`` (relative to slice 0) when it has one entry per slice,
    else ``k * spacing[0]``.
    """

    def __init__(self, volume: Volume) -> None:
        shape = tuple(int(s) for s in volume.pixels.shape[-3:])
        if len(shape) != 3:
            raise InvalidInput("labels need a 3D image volume (z, y, x)")
        self.shape: tuple[int, int, int] = (shape[0], shape[1], shape[2])
        self.direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
        self.spacing = np.asarray(volume.spacing, dtype=np.float64).reshape(3)
        self.origin = np.asarray(volume.origin, dtype=np.float64).reshape(3)
        if np.any(self.spacing <= 0) or abs(np.linalg.det(self.direction)) < 1e-6:
            raise InvalidInput("the image volume has degenerate geometry (spacing or direction)")
        # The matrix whose inverse maps LPS offsets to mm along (z, y, x): for a sheared stack
        # (gantry tilt) its first column is the slice step per mm along the normal, so a point
        # on slice k is measured within the plane from slice k's own first voxel.
        self.frame = self.direction.copy()
        if volume.slice_step is not None:
            self.frame[:, 0] = np.asarray(volume.slice_step, dtype=np.float64) / self.spacing[0]
        self.inv_direction = np.linalg.inv(self.frame)
        nz = self.shape[0]
        positions = [float(p) for p in (volume.slice_positions or [])]
        if len(positions) == nz and nz > 1:
            offsets = np.asarray(positions) - positions[0]
            if offsets[-1] < 0:  # positions measured against the slice axis
                offsets = -offsets
            if np.any(np.diff(offsets) <= 0):
                offsets = np.arange(nz) * self.spacing[0]
        else:
            offsets = np.arange(nz) * self.spacing[0]
        self.offsets = np.asarray(offsets, dtype=np.float64)
        gaps = np.diff(self.offsets) if nz > 1 else np.asarray([self.spacing[0]])
        # half-gap on either side of each slice
        self.gap_below = np.concatenate([[gaps[0]], gaps])
        self.gap_above = np.concatenate([gaps, [gaps[-1]]])

    def affine(self) -> np.ndarray:
        """4x4 voxel ``(z, y, x, 1)`` -> LPS mm (regular spacing)."""
        a = np.eye(4)
        a[:3, :3] = self.frame * self.spacing[None, :]
        a[:3, 3] = self.origin
        return a

    def to_mm(self, points: np.ndarray) -> np.ndarray:
        """LPS points ``(n, 3)`` -> millimetres along the (z, y, x) axes from the origin."""
        rel = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.origin[None, :]
        out: np.ndarray = rel @ self.inv_direction.T
        return out

    def slice_index(self, z_mm: float, tolerance: float) -> tuple[int, float]:
        """Nearest slice to ``z_mm`` and the distance to it in mm (``-1`` if none in tolerance).

        ``tolerance`` is a fraction of the gap to the neighbouring slice.
        """
        k = int(np.clip(np.searchsorted(self.offsets, z_mm), 0, len(self.offsets) - 1))
        if k > 0 and abs(self.offsets[k - 1] - z_mm) < abs(self.offsets[k] - z_mm):
            k -= 1
        dist = float(z_mm - self.offsets[k])
        gap = self.gap_above[k] if dist >= 0 else self.gap_below[k]
        if abs(dist) <= tolerance * gap + 1e-4:
            return k, dist
        return -1, dist


def as_floats(value: Any, n: int, what: str) -> np.ndarray:
    """``n`` floats from a multi-valued attribute, or :class:`InvalidInput` naming ``what``."""
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not numeric") from exc
    if arr.shape != (n,):
        raise InvalidInput(f"{what} must have {n} values, got {arr.size}")
    return arr


class GeometryMismatch(InvalidInput):
    """A label object that is readable but not drawn on this volume's grid."""


def _as_positive_int(value: Any) -> int | None:
    """``value`` as a positive integer, or ``None`` when it is empty or not one."""
    if value is None or isinstance(value, bool) or str(value).strip() == "":
        return None
    number = int(value)
    return number if number == float(value) and number >= 1 else None


def positive_number(item: Any, keyword: str, what: str) -> int:
    """A positive integer attribute (ROI Number, Segment Number ...) or InvalidInput."""
    try:
        # pydicom converts IS values on access (may raise)
        number = _as_positive_int(item.get(keyword))
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None:
        raise InvalidInput(f"{what} is empty or not a positive integer")
    return number


def is_multi(value: Any) -> bool:
    """Whether a pydicom value holds several values."""
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue | list | tuple)


def label_dtype(max_value: int) -> type[np.unsignedinteger[Any]]:
    """The smallest unsigned dtype that holds label values up to ``max_value``."""
    if max_value < 2**8:
        return np.uint8
    if max_value < 2**16:
        return np.uint16
    return np.uint32


def read_label_dataset(source: Any, what: str) -> Any:
    """A pydicom Dataset from a path or a Dataset (returned as is).

    Unreadable files raise :class:`InvalidInput` naming ``what``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, pydicom.Dataset):
        return source
    try:
        return pydicom.dcmread(str(source), force=True)
    except (OSError, InvalidDicomError, ValueError, EOFError, KeyError) as exc:
        raise InvalidInput(f"cannot read the {what} file ({type(exc).__name__})") from exc
