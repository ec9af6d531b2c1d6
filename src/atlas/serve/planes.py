"""The three viewing planes of a volume and their pixel grid at each pyramid level.

A tile server shows a 3-D image (array order ``z, y, x``) through three planes:

========  =======  =========================  ===========================
plane     normal   image rows (top -> bottom)  image columns (left -> right)
========  =======  =========================  ===========================
axial     z        y                           x
coronal   y        z reversed (head at top)    x
sagittal  x        z reversed (head at top)    y
========  =======  =========================  ===========================

Voxels are rarely square in a plane (0.7 mm in-plane, 2.5 mm slices), so each plane's picture
is resampled to square pixels of ``mm_per_px = min(row spacing, column spacing)`` of that level:
no axis loses resolution, the coarser one is interpolated, and the picture has the physical
aspect ratio (``width * mm_per_px`` is the volume's extent along the column axis). The picture
is cut into ``TILE x TILE`` tiles, the last row and column cut to the picture.

Slices are addressed in level-0 voxels along the normal at every level, so linked views share
coordinates; a level whose normal axis is downsampled by ``f`` shows level-0 slice ``i`` from its
own slice ``i // f``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput
from atlas.serve.choices import parse_choice

if TYPE_CHECKING:
    from atlas.read import ImageInfo

__all__ = [
    "TILE",
    "AxisSamples",
    "Plane",
    "PlaneGeometry",
    "axis_samples",
    "parse_plane",
    "pick_level",
    "plane_geometry",
    "plane_levels",
]

#: side of a square tile, in output pixels
TILE = 256


class Plane(StrEnum):
    """A viewing plane, named by radiology convention."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    @property
    def normal(self) -> int:
        """Spatial axis (0 = z, 1 = y, 2 = x) along which slices of this plane are stacked."""
        return _NORMAL[self]

    @property
    def row_axis(self) -> int:
        """Spatial axis running down the picture's rows (z is shown reversed)."""
        return 1 if self is Plane.AXIAL else 0

    @property
    def col_axis(self) -> int:
        """Spatial axis running along the picture's columns."""
        return 1 if self is Plane.SAGITTAL else 2

    @property
    def rows_reversed(self) -> bool:
        """Whether row 0 is the last voxel of :attr:`row_axis` (head at the top)."""
        return self is not Plane.AXIAL


_NORMAL = {Plane.AXIAL: 0, Plane.CORONAL: 1, Plane.SAGITTAL: 2}


def parse_plane(value: Any) -> Plane:
    """``value`` as a :class:`Plane`; :class:`InvalidInput` naming the choices otherwise."""
    return parse_choice(Plane, value, "plane")


@dataclass(frozen=True)
class PlaneGeometry:
    """The pixel grid of one plane at one pyramid level.

    Attributes
    ----------
    plane, level
        What this describes.
    width, height
        The whole picture in output pixels (square pixels of ``mm_per_px``).
    mm_per_px
        Side of an output pixel in mm.
    slices
        Number of level-0 slices along the normal (the range of the tile index).
    level_slices
        Number of slices of this level along the normal.
    normal_factor
        Level-0 slices per slice of this level (``slices`` of this level show ``i // f``).
    rows, cols
        Voxels of this level along the row and column axes.
    row_spacing, col_spacing
        Voxel size in mm of this level along the row and column axes.
    tiles_x, tiles_y
        Tile grid: columns and rows of ``TILE``-pixel tiles.
    """

    plane: Plane
    level: int
    width: int
    height: int
    mm_per_px: float
    slices: int
    level_slices: int
    normal_factor: int
    rows: int
    cols: int
    row_spacing: float
    col_spacing: float
    tiles_x: int
    tiles_y: int
    tile: int = TILE

    def tile_box(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        """Pixel box ``(row0, row1, col0, col1)`` of tile ``(ty, tx)``, cut to the picture."""
        r0, c0 = ty * self.tile, tx * self.tile
        return r0, min(self.height, r0 + self.tile), c0, min(self.width, c0 + self.tile)

    def to_json(self) -> dict[str, Any]:
        """The JSON form the series metadata route lists (``planes.<plane>.levels``)."""
        return {
            "level": self.level,
            "width": self.width,
            "height": self.height,
            "mm_per_px": self.mm_per_px,
            "slices": self.level_slices,
            "normal_factor": self.normal_factor,
            "tile": self.tile,
            "tiles_x": self.tiles_x,
            "tiles_y": self.tiles_y,
        }

    def as_dict(self) -> dict[str, Any]:
        """The same as :meth:`to_json` (the name the metadata route uses)."""
        return self.to_json()


def _check_3d(info: ImageInfo) -> None:
    if info.n_spatial != 3 or info.ndim - info.n_spatial > 1:
        raise InvalidInput(
            f"tiles need a 3-D image (z, y, x); {info.ref} has shape {info.shape}",
            site=info.ref.site,
        )
    if info.ndim == 4 and info.shape[0] != 1:
        raise InvalidInput(
            f"tiles need a single-channel image; {info.ref} has {info.shape[0]} channels",
            site=info.ref.site,
        )


def plane_geometry(info: ImageInfo, plane: Plane | str, level: int) -> PlaneGeometry:
    """The :class:`PlaneGeometry` of ``plane`` at ``level`` of the image ``info`` describes.

    Raises
    ------
    InvalidInput
        Unknown plane, a level out of range, or an image that is not 3-D single-channel.
    """
    plane = parse_plane(plane)
    _check_3d(info)
    shape = info.level_shape(level)[-3:]
    spacing = info.level_spacing(level)
    factors = info.spatial_factors(level)
    rows, cols = shape[plane.row_axis], shape[plane.col_axis]
    row_sp, col_sp = spacing[plane.row_axis], spacing[plane.col_axis]
    px = min(row_sp, col_sp)
    width = max(1, round(cols * col_sp / px))
    height = max(1, round(rows * row_sp / px))
    return PlaneGeometry(
        plane=plane,
        level=level,
        width=width,
        height=height,
        mm_per_px=px,
        slices=info.shape[-3:][plane.normal],
        level_slices=shape[plane.normal],
        normal_factor=factors[plane.normal],
        rows=rows,
        cols=cols,
        row_spacing=row_sp,
        col_spacing=col_sp,
        tiles_x=math.ceil(width / TILE),
        tiles_y=math.ceil(height / TILE),
    )


def plane_levels(info: ImageInfo, plane: Plane | str) -> list[PlaneGeometry]:
    """The geometry of ``plane`` at every level, finest first."""
    return [plane_geometry(info, plane, lv) for lv in range(len(info.levels))]


def pick_level(info: ImageInfo, plane: Plane | str, mm_per_screen_px: float) -> int:
    """The pyramid level to show ``plane`` at a zoom of ``mm_per_screen_px`` mm per screen pixel.

    The coarsest level whose output pixels are no larger than a screen pixel (so the picture
    is never magnified from a coarser level than needed); level 0 when zoomed in further.

    Raises
    ------
    InvalidInput
        ``mm_per_screen_px`` is not a positive finite number.
    """
    if (
        isinstance(mm_per_screen_px, bool)
        or not isinstance(mm_per_screen_px, int | float)
        or not math.isfinite(mm_per_screen_px)
        or mm_per_screen_px <= 0
    ):
        raise InvalidInput(
            f"zoom must be a positive number of mm per pixel, got {mm_per_screen_px!r}"
        )
    best = 0
    for geom in plane_levels(info, plane):
        if geom.mm_per_px <= mm_per_screen_px * (1 + 1e-9):
            best = geom.level
    return best


@dataclass(frozen=True)
class AxisSamples:
    """Where the output pixels ``j0 .. j1 - 1`` of one picture axis sample the level's voxels.

    Linear interpolation takes ``(1 - weight) * v[lo] + weight * v[hi]``; nearest takes
    ``v[nearest]``. All indices are voxels of the level along that axis.
    """

    lo: Any
    hi: Any
    weight: Any
    nearest: Any

    @property
    def start(self) -> int:
        """First voxel any sample touches."""
        return int(min(self.lo.min(), self.nearest.min()))

    @property
    def stop(self) -> int:
        """One past the last voxel any sample touches."""
        return int(max(self.hi.max(), self.nearest.max())) + 1


def axis_samples(
    voxels: int, spacing: float, mm_per_px: float, length: int, j0: int, j1: int, reverse: bool
) -> AxisSamples:
    """The samples of output pixels ``j0 .. j1 - 1`` of an axis of ``length`` pixels.

    Output pixel ``u`` (counted from the axis' first voxel; ``length - 1 - j`` when the axis is
    shown ``reverse``) has its centre at ``(u + 0.5) * mm_per_px`` mm from the volume's edge,
    that is at continuous voxel ``p = (u + 0.5) * mm_per_px / spacing - 0.5``, clamped to the
    voxel centres ``0 .. voxels - 1``; the nearest voxel is ``floor(p + 0.5)``.
    """
    import numpy as np

    j = np.arange(j0, j1, dtype=np.float64)
    u = (length - 1 - j) if reverse else j
    centre_mm = (u + 0.5) * mm_per_px
    nearest = np.clip(np.floor(centre_mm / spacing), 0, voxels - 1).astype(np.intp)
    p = np.clip(centre_mm / spacing - 0.5, 0, voxels - 1)
    lo = np.floor(p).astype(np.intp)
    hi = np.minimum(lo + 1, voxels - 1)
    weight = (p - lo).astype(np.float32)
    return AxisSamples(lo=lo, hi=hi, weight=weight, nearest=nearest)
