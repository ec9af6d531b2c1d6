"""What a reader knows about one image without reading pixels, and the geometry of its patches.

:class:`ImageInfo` comes from :func:`atlas.ome.open_image` (one small metadata read per image,
cached by the :class:`~atlas.read.Reader`). It maps voxels of any pyramid level to patient
space: level ``l`` voxel ``i`` sits at level-0 (continuous) index ``f * i + (f - 1) / 2`` along
an axis downsampled by ``f`` (the writer's mean-downsampling places each coarse voxel at the
centre of the fine voxels it averages, see :mod:`atlas.ome.writer`), so

``level_affine(l) = affine @ [[diag(f), (f - 1) / 2], [0, 1]]``

and a patch starting at voxel ``s`` of level ``l`` has ``level_affine(l) @ translate(s)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.ome import LevelInfo, OmeImage
from atlas.read.request import ImageRef, ReadRequest

__all__ = ["ImageInfo", "Patch", "image_info"]


@dataclass(frozen=True, eq=False)
class ImageInfo:
    """Shape, dtype, levels and patient-space geometry of one image (or label image).

    Attributes
    ----------
    ref
        The image this describes.
    shape
        Level-0 shape, array order (``z, y, x``; a channel axis first if any).
    dtype
        The stored dtype.
    levels
        Every pyramid level (its shape, chunks, shards and downsampling factors).
    affine
        Level-0 voxel index -> patient (LPS) millimetres, ``4 x (n + 1)`` for ``n`` spatial
        axes (4 x 4 for a 3-D image).
    direction
        ``3 x n`` direction cosines, one LPS column per spatial axis.
    spacing
        Level-0 voxel size in mm per spatial axis.
    """

    ref: ImageRef
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    levels: tuple[LevelInfo, ...]
    affine: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, ...]

    @property
    def ndim(self) -> int:
        """Number of array axes."""
        return len(self.shape)

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes (the last ones)."""
        return len(self.spacing)

    def level(self, level: int) -> LevelInfo:
        """The :class:`~atlas.ome.LevelInfo` of ``level``; :class:`InvalidInput` if out of range."""
        if (
            isinstance(level, bool)
            or not isinstance(level, int)
            or not 0 <= level < len(self.levels)
        ):
            raise InvalidInput(
                f"image {self.ref} has levels 0..{len(self.levels) - 1}, not {level!r}",
                site=self.ref.site,
            )
        return self.levels[level]

    def level_shape(self, level: int) -> tuple[int, ...]:
        """Shape of ``level`` (array order, all axes)."""
        return self.level(level).shape

    def spatial_factors(self, level: int) -> tuple[int, ...]:
        """Downsampling factor of ``level`` along each spatial axis (1 at level 0)."""
        return tuple(int(f) for f in self.level(level).factors[-self.n_spatial :])

    def level_affine(self, level: int) -> np.ndarray:
        """Voxel index of ``level`` -> patient mm (the shape of :attr:`affine`)."""
        f = np.asarray(self.spatial_factors(level), dtype=np.float64)
        n = self.n_spatial
        m = np.eye(n + 1)
        m[:n, :n] = np.diag(f)
        m[:n, n] = (f - 1) / 2
        out: np.ndarray = self.affine @ m
        return out

    def level_spacing(self, level: int) -> tuple[float, ...]:
        """Voxel size in mm at ``level`` per spatial axis."""
        return tuple(s * f for s, f in zip(self.spacing, self.spatial_factors(level), strict=True))

    def patch_affine(self, level: int, start: tuple[int, ...]) -> np.ndarray:
        """Patient-space affine of voxel ``start`` (spatial part used) of ``level`` as origin."""
        n = self.n_spatial
        t = np.eye(n + 1)
        t[:n, n] = np.asarray(start[-n:], dtype=np.float64)
        out: np.ndarray = self.level_affine(level) @ t
        return out


def image_info(ref: ImageRef, image: OmeImage) -> ImageInfo:
    """The :class:`ImageInfo` of ``ref`` from its opened image (a label of it if ``ref.label``).

    A label image shares its image's spatial grid and so its affine; its levels and dtype
    are its own.

    Raises
    ------
    NotFound
        ``ref.label`` is not one of the image's labels.
    InvalidInput
        The label's spatial shape differs from the image's.
    """
    meta = image.metadata
    n = len(meta.spatial_axes)
    levels = image.levels
    dtype = np.dtype(meta.dtype)
    if ref.label is not None:
        label = image.label(ref.label)
        levels = label.levels
        dtype = label.array(0).dtype
        if tuple(levels[0].shape[-n:]) != tuple(meta.shape[-n:]):
            raise InvalidInput(
                f"label {ref.label!r} of {ref} has shape {levels[0].shape}, the image "
                f"{meta.shape}; they must share the spatial grid",
                site=ref.site,
            )
    return ImageInfo(
        ref=ref,
        shape=tuple(levels[0].shape),
        dtype=dtype,
        levels=tuple(levels),
        affine=np.asarray(meta.affine, dtype=np.float64),
        direction=np.asarray(meta.direction, dtype=np.float64),
        spacing=tuple(float(s) for s in meta.spacing),
    )


@dataclass(frozen=True, eq=False)
class Patch:
    """The result of one :class:`~atlas.read.ReadRequest`.

    Attributes
    ----------
    data
        Exactly the region's size (fill where the region lies outside the image).
    affine
        Voxel ``(0, 0, 0)`` of this patch at its level -> patient mm (see
        :meth:`ImageInfo.patch_affine`).
    request
        The request this answers (with its region resolved: never ``None``).
    spacing
        Voxel size in mm at the patch's level, per spatial axis.
    origin
        Patient position (LPS mm) of the patch's voxel 0.
    direction
        ``3 x n`` direction cosines of the spatial axes.
    padded
        Whether any voxel came from the fill value.
    """

    data: np.ndarray
    affine: np.ndarray
    request: ReadRequest
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray
    padded: bool
