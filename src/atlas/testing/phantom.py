"""A seeded, CT-like body phantom with labels, generated lazily slab by slab.

Values are Hounsfield units: air -1000, body soft tissue ~40, lungs ~-850, liver ~60, spine
~700, tumours ~100, plus Gaussian noise. The label image marks 1 = liver, 2 = liver tumour,
3 = lung. The volume is a dask array computed per slab, so phantoms far larger than memory can
be streamed into a writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LABEL_COLORS", "LABEL_NAMES", "Phantom", "make_phantom", "phantom_slab"]

LABEL_NAMES = {1: "liver", 2: "liver tumour", 3: "lung"}
LABEL_COLORS = {1: (165, 80, 40, 255), 2: (255, 40, 40, 255), 3: (80, 160, 255, 255)}


@dataclass(frozen=True)
class Phantom:
    """A lazily generated CT phantom: ``image`` (int16 HU) and ``labels`` (uint8), both zyx."""

    image: Any
    labels: Any
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    tumours: tuple[tuple[float, float, float, float], ...]


def phantom_slab(
    z0: int,
    z1: int,
    shape: tuple[int, int, int],
    tumours: tuple[tuple[float, float, float, float], ...],
    seed: int,
    want: str,
) -> np.ndarray:
    """Slices ``z0:z1`` of a phantom's image or labels, computed in memory.

    Parameters
    ----------
    z0, z1
        The first slice and one past the last, along z.
    shape
        The whole phantom's shape (z, y, x): the anatomy is placed relative to it.
    tumours
        The tumour spheres ``(z, y, x, radius)``, centres as fractions of ``shape``, radius
        in voxels (as in :attr:`Phantom.tumours`).
    seed
        The phantom's seed: the noise of a slab depends only on it and ``z0``.
    want
        ``"image"`` (int16 HU with noise) or ``"labels"`` (uint8: 1 liver, 2 liver tumour,
        3 lung).

    Returns
    -------
    numpy.ndarray
        The slab, shape ``(z1 - z0, y, x)``; the same for the same arguments.
    """
    nz, ny, nx = shape
    z = (np.arange(z0, z1, dtype=np.float32)[:, None, None] + 0.5) / nz
    y = (np.arange(ny, dtype=np.float32)[None, :, None] + 0.5) / ny
    x = (np.arange(nx, dtype=np.float32)[None, None, :] + 0.5) / nx
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.52) / 0.32) ** 2 <= 1.0
    lung_z = (z > 0.05) & (z < 0.55)
    lung = lung_z & (
        (((x - 0.32) / 0.12) ** 2 + ((y - 0.45) / 0.16) ** 2 <= 1.0)
        | (((x - 0.68) / 0.12) ** 2 + ((y - 0.45) / 0.16) ** 2 <= 1.0)
    )
    liver = (
        (z >= 0.5)
        & (z < 0.9)
        & (((x - 0.38) / 0.17) ** 2 + ((y - 0.55) / 0.14) ** 2 + ((z - 0.7) / 0.22) ** 2 <= 1.0)
    )
    spine = ((x - 0.5) / 0.05) ** 2 + ((y - 0.76) / 0.05) ** 2 <= 1.0
    full = (z1 - z0, ny, nx)
    tumour = np.zeros(full, dtype=bool)
    for cz, cy, cx, r in tumours:
        tumour |= ((z - cz) * nz) ** 2 + ((y - cy) * ny) ** 2 + ((x - cx) * nx) ** 2 <= r**2
    tumour &= liver
    if want == "labels":
        lab = np.zeros(full, dtype=np.uint8)
        lab[np.broadcast_to(liver, lab.shape)] = 1
        lab[tumour] = 2
        lab[np.broadcast_to(lung & body, lab.shape)] = 3
        return lab
    img = np.full(full, -1000.0, dtype=np.float32)
    img[np.broadcast_to(body, img.shape)] = 40.0
    img[np.broadcast_to(lung & body, img.shape)] = -850.0
    img[np.broadcast_to(liver, img.shape)] = 60.0
    img[tumour] = 100.0
    img[np.broadcast_to(spine & body, img.shape)] = 700.0
    rng = np.random.default_rng([seed, z0])
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    noise *= 12.0
    img += noise
    del noise
    np.rint(img, out=img)
    np.clip(img, -1024, 3071, out=img)
    return img.astype(np.int16)


def make_phantom(
    shape: tuple[int, int, int] = (64, 256, 256),
    *,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    origin: tuple[float, float, float] = (-200.0, -180.0, -400.0),
    n_tumours: int = 3,
    seed: int = 0,
    slab: int = 16,
) -> Phantom:
    """A CT-like phantom of ``shape`` (z, y, x) as dask arrays (nothing computed yet)."""
    import dask.array as da
    from dask import delayed

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    tumours = tuple(
        (
            float(rng.uniform(0.6, 0.8)),
            float(rng.uniform(0.5, 0.6)),
            float(rng.uniform(0.3, 0.45)),
            float(rng.uniform(0.03, 0.06) * min(ny, nx)),
        )
        for _ in range(n_tumours)
    )

    def build(want: str, dtype: type) -> Any:
        parts = [
            da.from_delayed(
                delayed(phantom_slab)(z0, min(nz, z0 + slab), shape, tumours, seed, want),
                shape=(min(nz, z0 + slab) - z0, ny, nx),
                dtype=dtype,
            )
            for z0 in range(0, nz, slab)
        ]
        return da.concatenate(parts, axis=0)

    return Phantom(
        image=build("image", np.int16),
        labels=build("labels", np.uint8),
        spacing=spacing,
        origin=origin,
        tumours=tumours,
    )
