"""Pixel kernels: pyramid downsampling (mean for images, mode for label maps) and CT windowing.

Each kernel has a compiled implementation (``native/kernels.c``, built by ``pip install -e .``)
and a numpy reference with bit-identical results (:mod:`atlas._native`). ``backend="auto"`` uses
the compiled one when it is available and the numpy one otherwise.

Downsampling rule: every factor is 1 or 2; the output has ``ceil(n / f)`` elements per axis;
where a size is odd the missing neighbour is the edge value repeated (edge padding).

Supported dtypes: int8, uint8, int16, uint16, int32, uint32, int64, float32, float64
(``downsample_mode``: the integer ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from atlas import _native
from atlas.errors import InvalidInput

__all__ = [
    "SUPPORTED_DTYPES",
    "Backend",
    "downsample_mean",
    "downsample_mode",
    "native_available",
    "native_build_error",
    "window_to_uint8",
]

Backend = Literal["auto", "native", "numpy"]

#: Every dtype the kernels accept (``downsample_mode``: the integer ones only).
SUPPORTED_DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(name)
    for name in (
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "float32",
        "float64",
    )
)

_Kernel3D = Callable[[np.ndarray, tuple[int, int, int]], np.ndarray]


def native_available() -> bool:
    """Whether the compiled kernels (``atlas._kernels``) are importable and up to date."""
    return _native.NATIVE_AVAILABLE


def native_build_error() -> str | None:
    """Why the compiled kernels cannot be used (and how to build them), or ``None``."""
    return _native.native_build_error


def _use_native(backend: str, func: str) -> bool:
    if backend == "numpy":
        return False
    if backend == "native":
        if not _native.NATIVE_AVAILABLE:
            raise InvalidInput(
                f"{func}: backend='native' requested but {_native.native_build_error}"
            )
        return True
    if backend == "auto":
        return _native.NATIVE_AVAILABLE
    raise InvalidInput(f"{func}: backend must be 'auto', 'native' or 'numpy', got {backend!r}")


def _as_input(a: np.ndarray, func: str, *, integer_only: bool = False) -> np.ndarray:
    """``a`` as a C-contiguous, native-byte-order array of a supported dtype."""
    arr = np.asarray(a)
    kind_ok = arr.dtype.kind in "iu" if integer_only else arr.dtype.kind in "iuf"
    if not kind_ok or arr.dtype.newbyteorder("=") not in SUPPORTED_DTYPES:
        allowed = [d.name for d in SUPPORTED_DTYPES if not integer_only or d.kind in "iu"]
        what = "integer label dtypes" if integer_only else "dtypes"
        raise InvalidInput(
            f"{func}: unsupported dtype {arr.dtype}; supported {what}: {', '.join(allowed)}"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.asarray(arr, order="C")  # keeps 0-d arrays 0-d (ascontiguousarray does not)


def _downsample(
    a: np.ndarray,
    factors: tuple[int, ...] | None,
    backend: str,
    func: str,
    reference: _Kernel3D,
    *,
    integer_only: bool,
) -> np.ndarray:
    ndim = np.ndim(a)
    if ndim not in (2, 3):
        raise InvalidInput(f"{func}: expected a 2-D (y, x) or 3-D (z, y, x) array, got {ndim}-D")
    if factors is None:
        factors = (2,) * ndim
    factors = tuple(factors)
    if len(factors) != ndim:
        raise InvalidInput(
            f"{func}: factors {factors} must have one entry per axis ({ndim} for a {ndim}-D array)"
        )
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, int | np.integer) or f not in (1, 2):
            raise InvalidInput(f"{func}: every factor must be 1 or 2, got {factors}")
    native = _use_native(backend, func)
    arr = _as_input(a, func, integer_only=integer_only)
    f3 = (1, int(factors[0]), int(factors[1])) if ndim == 2 else tuple(int(f) for f in factors)
    arr3 = arr[np.newaxis] if ndim == 2 else arr
    fz, fy, fx = f3
    if native:
        module = _native.native_module()
        assert module is not None  # guaranteed by _use_native
        out: np.ndarray = getattr(module, func)(arr3, fz, fy, fx)
    else:
        out = reference(arr3, (fz, fy, fx))
    return out[0] if ndim == 2 else out


def downsample_mean(
    a: np.ndarray,
    factors: tuple[int, ...] | None = None,
    *,
    backend: Backend = "auto",
) -> np.ndarray:
    """Downsample an image by block mean (one pyramid level).

    Parameters
    ----------
    a
        2-D ``(y, x)`` or 3-D ``(z, y, x)`` array of a supported dtype.
    factors
        one factor per axis, each 1 or 2; default 2 on every axis.
    backend
        ``"native"`` (compiled), ``"numpy"`` (reference) or ``"auto"``.

    Returns
    -------
    numpy.ndarray
        An array of the input dtype with ``ceil(n / f)`` elements per axis. Integers are rounded
        half up: ``floor((sum + count // 2) / count)``; floats are summed in float64. Odd edges
        repeat the edge value.

    Raises
    ------
    InvalidInput
        wrong ndim, factor not in {1, 2}, unsupported dtype, or
        ``backend="native"`` when the extension is not compiled.
    """
    return _downsample(
        a,
        factors,
        backend,
        "downsample_mean",
        _native.downsample_mean_reference,
        integer_only=False,
    )


def downsample_mode(
    a: np.ndarray,
    factors: tuple[int, ...] | None = None,
    *,
    backend: Backend = "auto",
) -> np.ndarray:
    """Downsample a label map by block mode (most frequent value; ties go to the smallest).

    Parameters
    ----------
    a
        2-D ``(y, x)`` or 3-D ``(z, y, x)`` array of an integer dtype (int8 .. int64,
        not uint64).
    factors
        one factor per axis, each 1 or 2; default 2 on every axis.
    backend
        ``"native"`` (compiled), ``"numpy"`` (reference) or ``"auto"``.

    Returns
    -------
    numpy.ndarray
        An array of the input dtype with ``ceil(n / f)`` elements per axis. Odd edges repeat
        the edge value, which then counts twice.

    Raises
    ------
    InvalidInput
        wrong ndim, factor not in {1, 2}, a float or unsupported dtype, or
        ``backend="native"`` when the extension is not compiled.
    """
    return _downsample(
        a,
        factors,
        backend,
        "downsample_mode",
        _native.downsample_mode_reference,
        integer_only=True,
    )


def window_to_uint8(
    a: np.ndarray,
    center: float,
    width: float,
    *,
    backend: Backend = "auto",
) -> np.ndarray:
    """Map intensities through a display window (e.g. CT level/width) to uint8.

    ``lo = center - width / 2``; ``y = (x - lo) * 255 / width`` in float64; the result is
    ``floor(y + 0.5)`` clipped to ``[0, 255]``. NaN maps to 0, +inf to 255, -inf to 0.

    Parameters
    ----------
    a
        array of any shape and a supported dtype.
    center
        window centre (level), finite.
    width
        window width, finite and > 0.
    backend
        ``"native"`` (compiled), ``"numpy"`` (reference) or ``"auto"``.

    Returns
    -------
    numpy.ndarray
        A uint8 array of the shape of ``a``.

    Raises
    ------
    InvalidInput
        unsupported dtype, non-finite centre, width not finite and > 0, or
        ``backend="native"`` when the extension is not compiled.
    """
    func = "window_to_uint8"
    try:
        c, w = float(center), float(width)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{func}: center and width must be numbers") from exc
    if not (np.isfinite(w) and w > 0):
        raise InvalidInput(f"{func}: width must be finite and > 0, got {width!r}")
    if not np.isfinite(c):
        raise InvalidInput(f"{func}: center must be finite, got {center!r}")
    native = _use_native(backend, func)
    arr = _as_input(a, func)
    if native:
        module = _native.native_module()
        assert module is not None  # guaranteed by _use_native
        out: np.ndarray = module.window_to_uint8(arr, c, w)
        return out
    return _native.window_to_uint8_reference(arr, c, w)
