"""Counter-based random numbers: every draw is a pure function of its keys.

A sample's position must be the same in every process that computes it (DataLoader workers,
ranks, a resumed run), with no random state shared or carried between them. So instead of a
stateful generator, each draw hashes its keys — ``(seed, epoch, stream, index)`` — with the
SplitMix64 finaliser (Steele, Lea & Flood, *Fast splittable pseudorandom number generators*,
OOPSLA 2014), vectorised over numpy ``uint64`` arrays. The same keys give the same bits on every
machine and numpy version; neighbouring keys give independent-looking bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["STREAMS", "integers", "mix", "uniform"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: named streams, so that two uses of the same (seed, epoch, index) never share bits
STREAMS = {
    "order.block": 1,
    "order.buffer": 2,
    "order.flush": 3,
    "position": 10,
    "choice": 20,
    "positive": 21,
}


def _finalise(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def mix(*keys: Any) -> np.ndarray:
    """Hash integer keys (scalars or arrays, broadcast together) into uint64 bits."""
    with np.errstate(over="ignore"):
        h = np.zeros((), dtype=np.uint64)
        for key in keys:
            arr = np.asarray(key)
            if arr.dtype.kind == "u":
                k = arr.astype(np.uint64)
            else:  # signed (or Python int): two's complement bits, so -1 and 2**64-1 agree
                k = np.ascontiguousarray(arr, dtype=np.int64).view(np.uint64)
            h = _finalise((h ^ k) * _GOLDEN + _GOLDEN)
        return np.asarray(h, dtype=np.uint64)


def uniform(*keys: Any) -> np.ndarray:
    """Floats in ``[0, 1)`` from the top 53 bits of :func:`mix`."""
    return (mix(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def integers(high: Any, *keys: Any) -> np.ndarray:
    """Integers in ``[0, high)`` (``high`` >= 1, broadcast) from :func:`uniform`."""
    hi = np.asarray(high, dtype=np.int64)
    out = np.floor(uniform(*keys) * hi).astype(np.int64)
    return np.minimum(out, np.maximum(hi - 1, 0))
