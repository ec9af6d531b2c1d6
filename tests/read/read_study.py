"""Builders of the images the read tests share: a small 3-D CT-like volume, a label, a pyramid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.ome import LabelSpec, Layout, write_image
from atlas.storage import Store

SHAPE = (20, 48, 40)
SPACING = (2.5, 0.8, 0.7)
ORIGIN = (10.0, -20.0, 5.0)
#: a rotated (not axis-aligned) orientation: columns are the LPS directions of z, y, x
_C, _S = np.cos(0.3), np.sin(0.3)
DIRECTION = np.array([[0.0, _S, _C], [0.0, _C, -_S], [1.0, 0.0, 0.0]])
LAYOUT = Layout(chunks=(8, 16, 16), shards=(16, 32, 32))
IMAGE = "study/subject-1/series-1.ome.zarr"


@dataclass
class Written:
    """What a test wrote: the store, the image path and the arrays it holds."""

    store: Store
    path: str
    data: np.ndarray
    label: np.ndarray


def volume(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A reproducible int16 volume with distinct values (so misplaced voxels show)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=shape).astype("int16")


def mask(shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A label volume: a box of 1s and a box of 2s."""
    out = np.zeros(shape, dtype="uint8")
    out[2:9, 5:30, 4:20] = 1
    out[12:18, 30:44, 22:38] = 2
    return out


def write_study(store: Store, path: str = IMAGE, seed: int = 0) -> Written:
    """Write the test image (3 levels, a label ``organs``) into ``store``."""
    data, label = volume(seed), mask()
    write_image(
        store, path, data, spacing=SPACING, origin=ORIGIN, direction=DIRECTION,
        labels={"organs": LabelSpec(label, names={1: "liver", 2: "tumour"})},
        layout=LAYOUT, pyramid_target=16,
    )  # fmt: skip
    return Written(store, path, data, label)
