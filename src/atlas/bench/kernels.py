"""Benchmark: the native C kernels against their numpy reference (``atlas bench kernels``).

Both backends run in this process on the same arrays, one after the other; each is called once
untimed (that result is compared bit for bit with the other backend's) and then ``repeats`` times
timed. Reported per case: median time and spread of each backend, and the speed-up
``ratio = numpy median / native median``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from atlas import kernels
from atlas.bench.report import PlotSpec, Timing, print_table, time_call, write_report
from atlas.errors import InvalidInput

__all__ = ["run"]

FULL_SHAPE = (64, 512, 512)
QUICK_SHAPE = (8, 64, 64)
FULL_REPEATS = 5
QUICK_REPEATS = 1

COLUMNS = [
    "case",
    "shape",
    "numpy_ms",
    "numpy_spread",
    "native_ms",
    "native_spread",
    "ratio",
    "native_mvox_s",
    "equal",
]


@dataclass(frozen=True)
class _Case:
    name: str
    kernel: str
    dtype: str
    factors: tuple[int, ...] | None
    make: Callable[[tuple[int, ...], np.random.Generator], np.ndarray]
    call: Callable[[np.ndarray, kernels.Backend], np.ndarray]


def _ct(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """CT-like int16 Hounsfield units."""
    return rng.integers(-1024, 3072, size=shape, dtype=np.int16)


def _ct_float(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.normal(40.0, 300.0, size=shape).astype(np.float32)


def _labels(dtype: type[np.integer], n_labels: int) -> Callable[..., np.ndarray]:
    """Piecewise-constant label map (4-voxel cells) with 5% noise, so blocks hold ties."""

    def make(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        coarse_shape = tuple(-(-n // 4) for n in shape)
        coarse = rng.integers(0, n_labels, size=coarse_shape).astype(dtype)
        full = coarse.repeat(4, 0).repeat(4, 1).repeat(4, 2)[: shape[0], : shape[1], : shape[2]]
        noise = rng.random(shape) < 0.05
        full[noise] = rng.integers(0, n_labels, size=int(noise.sum())).astype(dtype)
        return np.ascontiguousarray(full)

    return make


def _cases() -> list[_Case]:
    def mean(f: tuple[int, ...]) -> Callable[[np.ndarray, kernels.Backend], np.ndarray]:
        return lambda a, b: kernels.downsample_mean(a, f, backend=b)

    def mode(f: tuple[int, ...]) -> Callable[[np.ndarray, kernels.Backend], np.ndarray]:
        return lambda a, b: kernels.downsample_mode(a, f, backend=b)

    def window(a: np.ndarray, b: kernels.Backend) -> np.ndarray:
        return kernels.window_to_uint8(a, 40.0, 400.0, backend=b)

    return [
        _Case("mean int16 2x2x2", "downsample_mean", "int16", (2, 2, 2), _ct, mean((2, 2, 2))),
        _Case("mean int16 1x2x2", "downsample_mean", "int16", (1, 2, 2), _ct, mean((1, 2, 2))),
        _Case(
            "mean float32 2x2x2",
            "downsample_mean",
            "float32",
            (2, 2, 2),
            _ct_float,
            mean((2, 2, 2)),
        ),
        _Case(
            "mode uint8 2x2x2",
            "downsample_mode",
            "uint8",
            (2, 2, 2),
            _labels(np.uint8, 8),
            mode((2, 2, 2)),
        ),
        _Case(
            "mode uint16 2x2x2",
            "downsample_mode",
            "uint16",
            (2, 2, 2),
            _labels(np.uint16, 300),
            mode((2, 2, 2)),
        ),
        _Case("window int16->uint8", "window_to_uint8", "int16", None, _ct, window),
    ]


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def run(out: Path, quick: bool = False) -> dict[str, Path]:
    """Time every kernel natively and with numpy, print the table and write the report.

    Parameters
    ----------
    out
        folder for ``kernels.json``, ``kernels.md`` and ``kernels.png``.
    quick
        tiny arrays and one repeat (a smoke run, e.g. in CI).

    Returns
    -------
    dict[str, Path]
        The report paths, keyed ``json``, ``md``, ``png``.

    Raises
    ------
    InvalidInput
        the native kernels are not compiled (``pip install -e .`` builds them).
    """
    if not kernels.native_available():
        why = kernels.native_build_error()
        raise InvalidInput(f"cannot benchmark the native kernels: {why}")
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    repeats = QUICK_REPEATS if quick else FULL_REPEATS
    rng = np.random.default_rng(20240611)
    voxels = int(np.prod(shape))

    rows: list[dict[str, Any]] = []
    for case in _cases():
        data = case.make(shape, rng)
        results: dict[str, np.ndarray] = {}
        timings: dict[str, Timing] = {}
        backends: tuple[kernels.Backend, ...] = ("numpy", "native")
        for backend in backends:
            call = partial(case.call, data, backend)
            results[backend] = call()  # untimed warm-up; its result is compared below
            timings[backend] = time_call(call, repeats=repeats, warmup=0)
        numpy_t, native_t = timings["numpy"], timings["native"]
        rows.append(
            {
                "case": case.name,
                "kernel": case.kernel,
                "dtype": case.dtype,
                "factors": list(case.factors) if case.factors else None,
                "shape": "x".join(map(str, shape)),
                "numpy_ms": numpy_t.median * 1e3,
                "numpy_spread": numpy_t.spread,
                "native_ms": native_t.median * 1e3,
                "native_spread": native_t.spread,
                "ratio": numpy_t.median / native_t.median,
                "native_mvox_s": voxels / native_t.median / 1e6,
                "equal": _identical(results["native"], results["numpy"]),
                "numpy_timing": numpy_t.to_dict(),
                "native_timing": native_t.to_dict(),
            }
        )

    title = "Native kernels vs numpy reference"
    print_table(rows, COLUMNS, title)
    meta = {
        "shape": "x".join(map(str, shape)),
        "repeats": repeats,
        "warmup": "1 untimed call per backend (its result is compared)",
        "quick": quick,
        "ratio": "numpy median / native median (same process, same arrays)",
        "window": "center 40, width 400",
    }
    plot = PlotSpec(
        x="case",
        y=["numpy_ms", "native_ms"],
        ylabel="median time per call (ms, log)",
        labels={"numpy_ms": "numpy reference", "native_ms": "native C"},
        log=True,
    )
    return write_report(Path(out), "kernels", rows, COLUMNS, title, meta, plot)
