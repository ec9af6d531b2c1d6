"""Rasterising a closed polygon: the pixels whose centres lie inside it (even-odd rule)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fill_polygon"]


def fill_polygon(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie inside or on a closed polygon (even-odd rule).

    Vectorised scanlines: O(edges x rows) instead of testing every pixel of the bounding box
    against every edge. A centre exactly on an edge counts as inside, on every side (two
    half-open scans, one from each direction, are merged).
    """
    ny = shape[0]
    r = np.asarray(rows, np.float64)
    rr1, cc1 = _scan_fill(r, cols, shape)
    rr2, cc2 = _scan_fill((ny - 1) - r, cols, shape)
    plane = np.zeros(shape, dtype=bool)
    plane[rr1, cc1] = True
    plane[(ny - 1) - rr2, cc2] = True
    found_r, found_c = np.nonzero(plane)
    return found_r, found_c


def _scan_fill(
    rows: np.ndarray, cols: Any, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = shape
    r0, c0 = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    lo, hi = np.minimum(r0, r1), np.maximum(r0, r1)
    # rows y with lo <= y < hi (half-open: a vertex is counted once; horizontal edges never)
    start = np.clip(np.ceil(lo), 0, ny).astype(np.int64)
    stop = np.clip(np.ceil(hi), 0, ny).astype(np.int64)
    counts = np.maximum(stop - start, 0)
    total = int(counts.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    edge = np.repeat(np.arange(r0.size), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    y = np.repeat(start, counts) + offset
    t = (y - r0[edge]) / (r1[edge] - r0[edge])
    x = c0[edge] + t * (c1[edge] - c0[edge])
    order = np.lexsort((x, y))
    y, x = y[order], x[order]
    left, right, row = x[0::2], x[1::2], y[0::2]
    c_start = np.clip(np.ceil(left), 0, nx).astype(np.int64)
    c_stop = np.clip(np.floor(right) + 1, 0, nx).astype(np.int64)
    widths = np.maximum(c_stop - c_start, 0)
    n = int(widths.sum())
    rr = np.repeat(row, widths)
    cc = np.repeat(c_start, widths) + (np.arange(n) - np.repeat(np.cumsum(widths) - widths, widths))
    return rr, cc
