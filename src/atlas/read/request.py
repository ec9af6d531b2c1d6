"""What to read: an image on a site, a voxel box at a pyramid level, and the reading options.

Everything here is plain, frozen data that pickles and hashes, so a sample plan can be built
in one process and read in another. Checks that need no I/O (ranks, negative sizes, types)
happen when the objects are made; checks that need the image (levels, bounds) happen in
:meth:`atlas.read.Reader.validate`, still before any pixel is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from atlas.errors import InvalidInput

__all__ = ["Engine", "ImageRef", "OutOfBounds", "ReadRequest", "Region"]

#: the names of the three spatial axes of a 3-D image, as used by :meth:`Region.plane`
AXIS_NAMES = {"axial": 0, "coronal": 1, "sagittal": 2}


class OutOfBounds(StrEnum):
    """What a read does with the part of a region that lies outside the image.

    ``PAD`` fills it with the reader's ``fill`` value (and marks the patch ``padded``);
    ``RAISE`` refuses the request with :class:`~atlas.errors.InvalidInput` before any I/O.
    """

    PAD = "pad"
    RAISE = "raise"


class Engine(StrEnum):
    """The library that reads the chunks: tensorstore (default) or zarr-python (fallback)."""

    TENSORSTORE = "tensorstore"
    ZARR = "zarr"


def parse_enum(enum: type[Enum], value: Any, what: str) -> Any:
    """``value`` as a member of ``enum`` (a member or its string value), else InvalidInput."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum)
        raise InvalidInput(f"{what} must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True)
class ImageRef:
    """One image, or one of its label images, on one site.

    Parameters
    ----------
    site
        Key into the :class:`~atlas.read.Reader`'s ``stores`` mapping.
    path
        The image's path in that store, e.g. ``"liver-ct/<subject>/<series>.ome.zarr"``.
    label
        Name of a label image under ``<path>/labels/``, or ``None`` for the image itself.
    """

    site: str
    path: str
    label: str | None = None

    def __post_init__(self) -> None:
        for name in ("site", "path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip("/"):
                raise InvalidInput(f"ImageRef.{name} must be a non-empty string, got {value!r}")
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            raise InvalidInput(f"ImageRef.label must be a name or None, got {self.label!r}")
        object.__setattr__(self, "path", self.path.strip("/"))

    def __str__(self) -> str:
        label = f" label {self.label!r}" if self.label else ""
        return f"{self.site}:{self.path}{label}"


def _ints(values: Any, what: str) -> tuple[int, ...]:
    """``values`` as a non-empty tuple of Python ints, else InvalidInput naming ``what``."""
    try:
        items = tuple(values)
    except TypeError:
        raise InvalidInput(f"{what} must be a sequence of integers, got {values!r}") from None
    out = []
    for v in items:
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise InvalidInput(f"{what} must be integers, got {values!r}")
        out.append(int(v.__index__()))
    if not out:
        raise InvalidInput(f"{what} must have at least one axis, got {values!r}")
    return tuple(out)


@dataclass(frozen=True)
class Region:
    """A voxel box at the request's level, in array order (``z, y, x``), stop exclusive.

    A region may lie partly (or wholly) outside the image; the reader pads or refuses it
    (:class:`OutOfBounds`). Its size must be positive along every axis.

    Parameters
    ----------
    start
        First voxel of the box along each axis (may be negative).
    stop
        One past the last voxel along each axis.
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        start, stop = _ints(self.start, "Region.start"), _ints(self.stop, "Region.stop")
        if len(start) != len(stop):
            raise InvalidInput(
                f"Region start {start} and stop {stop} have different numbers of axes"
            )
        bad = [i for i, (a, b) in enumerate(zip(start, stop, strict=True)) if b <= a]
        if bad:
            raise InvalidInput(
                f"Region size must be positive on every axis: start {start}, stop {stop} "
                f"(size {tuple(b - a for a, b in zip(start, stop, strict=True))})"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "stop", stop)

    @property
    def size(self) -> tuple[int, ...]:
        """Voxels along each axis."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.start)

    @classmethod
    def whole(cls, shape: Sequence[int]) -> Region:
        """The box covering an array of ``shape``."""
        dims = _ints(shape, "shape")
        return cls(tuple(0 for _ in dims), dims)

    @classmethod
    def centred(cls, centre: Sequence[int], size: Sequence[int]) -> Region:
        """The box of ``size`` voxels whose centre voxel is ``centre``.

        For an even size the centre is the voxel just after the middle
        (``start = centre - size // 2``).
        """
        c, s = _ints(centre, "centre"), _ints(size, "size")
        if len(c) != len(s):
            raise InvalidInput(f"centre {c} and size {s} have different numbers of axes")
        if any(n <= 0 for n in s):
            raise InvalidInput(f"size must be positive on every axis, got {s}")
        start = tuple(a - n // 2 for a, n in zip(c, s, strict=True))
        return cls(start, tuple(a + n for a, n in zip(start, s, strict=True)))

    @classmethod
    def plane(cls, axis: int | str, index: int, shape: Sequence[int]) -> Region:
        """A 2-D slice of an array of ``shape``: the whole array, 1 voxel thick along ``axis``.

        ``axis`` counts the last three (spatial) axes, 0 = ``z`` (axial), 1 = ``y`` (coronal),
        2 = ``x`` (sagittal), or is one of those names; leading (channel) axes are kept whole.
        """
        dims = _ints(shape, "shape")
        if isinstance(axis, str):
            if axis not in AXIS_NAMES:
                raise InvalidInput(f"plane axis must be one of {sorted(AXIS_NAMES)}, got {axis!r}")
            axis = AXIS_NAMES[axis]
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise InvalidInput(f"plane axis must be 0, 1 or 2 (z, y, x), got {axis!r}")
        spatial = min(3, len(dims))
        if not 0 <= axis < spatial:
            raise InvalidInput(f"plane axis must be 0..{spatial - 1} for shape {dims}, got {axis}")
        at = len(dims) - spatial + axis
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidInput(f"plane index must be an integer, got {index!r}")
        start = tuple(index if i == at else 0 for i in range(len(dims)))
        stop = tuple(index + 1 if i == at else n for i, n in enumerate(dims))
        return cls(start, stop)

    def slices(self) -> tuple[slice, ...]:
        """The box as slices (for numpy; only meaningful inside the array)."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))


@dataclass(frozen=True)
class ReadRequest:
    """One read: a region of one level of one image.

    Parameters
    ----------
    image
        The image (or label image) to read.
    region
        The voxel box at ``level``; ``None`` reads the whole level.
    level
        The pyramid level (0 = full resolution).
    dtype
        The dtype of the returned data; ``None`` keeps the stored dtype. Only a cast that
        keeps every value (``numpy.can_cast(stored, dtype, "safe")``) is allowed.
    """

    image: ImageRef
    region: Region | None = None
    level: int = 0
    dtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageRef):
            raise InvalidInput(f"ReadRequest.image must be an ImageRef, got {self.image!r}")
        if self.region is not None and not isinstance(self.region, Region):
            raise InvalidInput(f"ReadRequest.region must be a Region or None, got {self.region!r}")
        lv = self.level
        if isinstance(lv, bool) or not hasattr(lv, "__index__") or int(lv) < 0:
            raise InvalidInput(f"ReadRequest.level must be a non-negative integer, got {lv!r}")
        object.__setattr__(self, "level", int(lv))
        if self.dtype is not None:
            import numpy as np

            try:
                dt = np.dtype(self.dtype)
            except (TypeError, ValueError):
                raise InvalidInput(f"ReadRequest.dtype {self.dtype!r} is not a dtype") from None
            object.__setattr__(self, "dtype", dt.str)
