"""The serving benchmark's baseline: what a simple tile endpoint does, per request, no cache.

``GET /bench/naive/{plane}/{level}/{index}/{ty}/{tx}.png`` opens the level with zarr-python,
reads the whole slice (for a coronal or sagittal plane: every chunk along z), windows it to
soft tissue, resizes it to the physical aspect ratio with Pillow (bilinear), flips it head up,
cuts the tile and encodes it as PNG. It answers the same tiles as the real route (to within
resampling), so the two are timed on the same requests in the same server process.
"""

from __future__ import annotations

import io
from typing import Any

__all__ = ["add_naive_route", "naive_tile"]

TILE = 256


def naive_tile(
    store: Any, path: str, spacing: tuple[float, float, float], plane: str, level: int,
    index: int, ty: int, tx: int,
) -> bytes:  # fmt: skip
    """One tile the naive way (see the module doc)."""
    import numpy as np
    import zarr
    from PIL import Image

    root = zarr.open_array(store.zarr_store(), path=f"{path}/0", mode="r")
    arr = zarr.open_array(store.zarr_store(), path=f"{path}/{level}", mode="r")
    sp = [s * n0 / n for s, n0, n in zip(spacing, root.shape, arr.shape, strict=True)]
    axis = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    k = min(index * arr.shape[axis] // root.shape[axis], arr.shape[axis] - 1)
    values = np.take(_slice(arr, axis, k), 0, axis=axis)
    rows_sp, cols_sp = [s for i, s in enumerate(sp) if i != axis]
    px = min(rows_sp, cols_sp)
    grey = np.clip((values.astype(np.float32) - (40 - 200)) * (255 / 400), 0, 255)
    image = Image.fromarray(grey.astype(np.uint8), mode="L")
    width = max(1, round(values.shape[1] * cols_sp / px))
    height = max(1, round(values.shape[0] * rows_sp / px))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    if axis != 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    box = (tx * TILE, ty * TILE, min(width, (tx + 1) * TILE), min(height, (ty + 1) * TILE))
    buf = io.BytesIO()
    image.crop(box).save(buf, format="PNG")
    return buf.getvalue()


def _slice(arr: Any, axis: int, k: int) -> Any:
    key = [slice(None)] * 3
    key[axis] = slice(k, k + 1)
    return arr[tuple(key)]


def add_naive_route(app: Any, store: Any, path: str, spacing: tuple[float, float, float]) -> None:
    """Add the baseline route to ``app`` (no token: loopback benchmarks only)."""
    from fastapi import Response

    def naive(plane: str, level: int, index: int, ty: int, tx: int) -> Response:
        body = naive_tile(store, path, spacing, plane, level, index, ty, tx)
        return Response(body, media_type="image/png")

    app.add_api_route("/bench/naive/{plane}/{level}/{index}/{ty}/{tx}.png", naive, methods=["GET"])
