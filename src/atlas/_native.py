"""The compiled kernels (``atlas._kernels``, built from ``native/``) and their numpy reference.

The numpy functions here are the *specification* of each kernel: the C code must give
bit-identical results for every input (``tests/kernels/test_kernels.py`` checks this). They
are also the fallback when the extension was not compiled.

Importing this module only attempts ``import atlas._kernels``; on failure
:data:`NATIVE_AVAILABLE` is ``False`` and :data:`native_build_error` says why.

Shared block rule of both downsamplers (3-D input, factors ``(fz, fy, fx)``, each 1 or 2): along
an axis with factor 2 and odd size the array is edge-padded to even size (the last value is
repeated), so every block holds exactly ``fz * fy * fx`` values; the output has
``ceil(n / f)`` elements per axis. Block values are visited in ``(dz, dy, dx)`` lexicographic
order, which fixes the floating-point summation order.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

__all__ = [
    "API_VERSION",
    "NATIVE_AVAILABLE",
    "downsample_mean_reference",
    "downsample_mode_reference",
    "native_build_error",
    "native_module",
    "window_to_uint8_reference",
]

#: Behaviour version the Python side expects from ``atlas._kernels`` (``API_VERSION`` in C).
API_VERSION = 1

_BUILD_HINT = "build it with `pip install -e .` (compiles native/kernels.c)"


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        module = importlib.import_module("atlas._kernels")
    except ImportError as exc:
        return None, f"atlas._kernels is not compiled ({exc}); {_BUILD_HINT}"
    found = getattr(module, "API_VERSION", None)
    if found != API_VERSION:
        return None, (
            f"atlas._kernels is stale (API_VERSION {found}, expected {API_VERSION}); "
            f"re{_BUILD_HINT}"
        )
    return module, None


_module, native_build_error = _load()
#: True when the compiled kernels were imported and match this Python code.
NATIVE_AVAILABLE: bool = _module is not None


def native_module() -> ModuleType | None:
    """The compiled ``atlas._kernels`` module, or ``None`` if it is not available."""
    return _module if NATIVE_AVAILABLE else None


def _block_views(a: np.ndarray, factors: tuple[int, int, int]) -> list[np.ndarray]:
    """The ``fz*fy*fx`` strided views of ``a``, one per position in a block.

    ``a`` is edge-padded to even size along factor-2 axes; element ``[i, j, k]`` of each view is
    one value of output block ``[i, j, k]``, in (dz, dy, dx) order.
    """
    pad = [(0, n % 2 if f == 2 else 0) for n, f in zip(a.shape, factors, strict=True)]
    if any(after for _, after in pad):
        a = np.pad(a, pad, mode="edge")
    fz, fy, fx = factors
    return [a[dz::fz, dy::fy, dx::fx] for dz in range(fz) for dy in range(fy) for dx in range(fx)]


def downsample_mean_reference(a: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block mean of a 3-D array (the specification of the native ``downsample_mean``).

    Integers: ``floor((sum + count // 2) / count)`` with the exact integer sum (round half up),
    cast back to the input dtype; for int64 the sum is split so that it cannot overflow.
    Floats: the block values are summed in float64 in (dz, dy, dx) order, starting from the
    first value, divided by ``count`` and cast to the input dtype.
    """
    views = _block_views(a, factors)
    count = len(views)
    shift = count.bit_length() - 1  # count is 1, 2, 4 or 8
    if a.dtype.kind == "f":
        with np.errstate(all="ignore"):  # inf - inf and NaN propagate as in C
            total = views[0].astype(np.float64)
            for v in views[1:]:
                total += v
            return (total / count).astype(a.dtype)
    if a.dtype == np.int64:
        # v == (v >> k) * count + (v & (count - 1)) with floor shift; no partial sum overflows.
        quot = np.zeros(views[0].shape, dtype=np.int64)
        rem = np.zeros(views[0].shape, dtype=np.int64)
        for v in views:
            quot += v >> shift
            rem += v & (count - 1)
        return quot + np.floor_divide(rem + count // 2, count)
    total = views[0].astype(np.int64)
    for v in views[1:]:
        total += v
    return np.floor_divide(total + count // 2, count).astype(a.dtype)


def downsample_mode_reference(a: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Most frequent value of each block of a 3-D integer array; ties go to the smallest value.

    The specification of the native ``downsample_mode``. Edge-repeated values count as often as
    they are repeated.
    """
    views = _block_views(a, factors)
    if len(views) == 1:
        return views[0].copy()
    values = np.stack(views, axis=-1)
    values.sort(axis=-1)
    # counts[..., j]: how many values of the block equal values[..., j]
    counts = np.zeros(values.shape, dtype=np.int8)
    for i in range(values.shape[-1]):
        counts += values == values[..., i : i + 1]
    # argmax returns the first maximum: the smallest of the most frequent values (sorted).
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(values, best[..., None], axis=-1)[..., 0]


def window_to_uint8_reference(a: np.ndarray, center: float, width: float) -> np.ndarray:
    """CT windowing to uint8 (the specification of the native ``window_to_uint8``).

    ``lo = center - width / 2``; ``y = (x - lo) * 255 / width`` in float64, in that order;
    the result is ``floor(y + 0.5)`` clipped to ``[0, 255]``; NaN gives 0. ``width`` must be
    finite and > 0 and ``center`` finite (checked by the caller).
    """
    lo = center - width / 2.0
    with np.errstate(all="ignore"):
        y = (a.astype(np.float64) - lo) * 255.0 / width
        t = np.clip(np.floor(y + 0.5), 0.0, 255.0)
    # np.where also keeps a 0-d input an array (ufuncs return scalars for those)
    return np.where(np.isnan(t), 0.0, t).astype(np.uint8)
