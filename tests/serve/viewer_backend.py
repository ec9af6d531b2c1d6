"""A stand-in for :mod:`atlas.serve.render` in the viewer's browser tests, on real data.

The server's app (:func:`atlas.serve.app.create_app`: real tokens, catalog routes, tile route
with its checks, ETags and render slots) calls this renderer until the production one lands.
It renders real tiles: the slice read with :class:`atlas.read.Reader` at the requested pyramid
level, resampled to the physical aspect ratio, windowed, label overlays in their OME-Zarr
colours and the requested opacity, cut into 256-px tiles (rows top to bottom as the contract
says: axial rows y, coronal and sagittal rows z reversed) and encoded as PNG with Pillow.
:func:`plane_size` is the same geometry the viewer derives when the series document carries
no plane levels.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from atlas.errors import InvalidInput
from atlas.ome import OmeLabel
from atlas.read import ReadRequest, Region

TILE = 256
AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
PRESETS = {
    "ct-soft-tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}


def plane_size(plane: str, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[int, int]:
    """(width, height) in px of a plane of a level, square pixels of the finer in-plane mm."""
    z, y, x = shape
    sz, sy, sx = spacing
    (nc, sc), (nr, sr) = {
        "axial": ((x, sx), (y, sy)),
        "coronal": ((x, sx), (z, sz)),
        "sagittal": ((y, sy), (z, sz)),
    }[plane]
    mm = min(sc, sr)
    return max(1, round(nc * sc / mm)), max(1, round(nr * sr / mm))


def window_of(text: str, grey: np.ndarray) -> tuple[float, float]:
    """(width, centre) of a preset, ``auto`` (1st-99th percentile) or ``W,C``."""
    if text in PRESETS:
        return PRESETS[text]
    if text == "auto":
        lo, hi = np.percentile(grey, [1, 99])
        return max(float(hi - lo), 1.0), float(hi + lo) / 2
    w, c = (float(v) for v in text.split(","))
    return w, c


class SliceRenderer:
    """``render(reader, entry, params) -> bytes`` (PNG) for the app's tile route."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, reader: Any, entry: Any, params: Any) -> bytes:
        self.calls += 1
        plane = params.plane.value
        axis = AXIS[plane]
        info = reader.info(entry.ref())
        level = params.level
        shape = info.level_shape(level)[-3:]
        at = min(shape[axis] - 1, params.index // info.spatial_factors(level)[axis])
        region = Region.plane(axis, at, shape)

        def cut(ref: Any) -> np.ndarray:
            data = np.squeeze(reader.read(ReadRequest(ref, region, level)).data, axis=axis)
            return data if plane == "axial" else data[::-1]  # head at the top

        grey = cut(entry.ref()).astype(np.float64)
        w, c = window_of(params.window, grey)
        rgb = np.repeat((np.clip((grey - (c - w / 2)) / w, 0, 1) * 255)[..., None], 3, axis=2)
        for name in params.labels:
            lab = cut(entry.ref(name))
            node = reader.node(entry.ref(name))
            assert isinstance(node, OmeLabel)
            for v in np.unique(lab):
                if v == 0:
                    continue
                r, g, b, a = node.info.colors.get(int(v), (255, 255, 0, 255))
                alpha = params.opacity * a / 255
                m = lab == v
                rgb[m] = rgb[m] * (1 - alpha) + np.array([r, g, b]) * alpha
        width, height = plane_size(plane, shape, info.level_spacing(level))
        pic = Image.fromarray(rgb.astype(np.uint8)).resize((width, height), Image.BILINEAR)
        x0, y0 = params.tx * TILE, params.ty * TILE
        if x0 >= width or y0 >= height:
            raise InvalidInput(f"tile {params.ty},{params.tx} lies outside the plane's grid")
        buf = io.BytesIO()
        pic.crop((x0, y0, min(width, x0 + TILE), min(height, y0 + TILE))).save(buf, "PNG")
        return buf.getvalue()
