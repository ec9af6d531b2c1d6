"""The native kernels equal their numpy reference bit for bit; the reference is pinned by hand
examples and by naive per-block loops; invalid input raises InvalidInput.

These tests fail (they do not skip) when ``atlas._kernels`` is not compiled: the documented test
command builds it first (``pip install -e .``).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atlas import _native, kernels
from atlas.errors import InvalidInput

ALL_DTYPES = [np.dtype(d) for d in kernels.SUPPORTED_DTYPES]
INT_DTYPES = [d for d in ALL_DTYPES if d.kind in "iu"]
FLOAT_DTYPES = [d for d in ALL_DTYPES if d.kind == "f"]

PROPERTY = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------------------------
# helpers


def assert_bit_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bits. For floats, NaN must be NaN in both; the NaN payload is not
    part of the contract (C and numpy may propagate different NaN operands)."""
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "f":
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg="NaN positions differ")
        got, want = got[~nan], want[~nan]
        bits = np.dtype(f"u{want.dtype.itemsize}")
        got, want = got.view(bits), want.view(bits)
    np.testing.assert_array_equal(got, want)


def value_strategy(dtype: np.dtype, narrow: bool) -> st.SearchStrategy:
    """Elements: the full range of ``dtype`` (extremes included; NaN/inf/subnormals for floats)
    or a narrow range that produces repeats, ties and rounding halves."""
    if dtype.kind == "f":
        if narrow:
            return st.integers(-4, 4).map(lambda v: v / 2)
        return hnp.from_dtype(dtype)
    info = np.iinfo(dtype)
    if narrow:
        return st.integers(max(info.min, -3), min(info.max, 3))
    return st.integers(int(info.min), int(info.max))


@st.composite
def downsample_cases(
    draw: st.DrawFn, dtypes: list[np.dtype], max_side: int = 9
) -> tuple[np.ndarray, tuple[int, ...]]:
    dtype = draw(st.sampled_from(dtypes))
    ndim = draw(st.sampled_from([2, 3]))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=max_side))
    narrow = draw(st.booleans())
    a = draw(hnp.arrays(dtype, shape, elements=value_strategy(dtype, narrow)))
    factors = draw(st.tuples(*[st.sampled_from([1, 2])] * ndim))
    return a, factors


# --------------------------------------------------------------------------------------------
# the extension is there


def test_native_module_is_compiled() -> None:
    assert _native.NATIVE_AVAILABLE, _native.native_build_error
    assert kernels.native_available()
    assert _native.native_build_error is None
    import atlas._kernels as ext

    assert ext.API_VERSION == _native.API_VERSION


# --------------------------------------------------------------------------------------------
# native == numpy reference, bit for bit


@PROPERTY
@given(downsample_cases(ALL_DTYPES))
def test_mean_native_equals_reference(case: tuple[np.ndarray, tuple[int, ...]]) -> None:
    a, factors = case
    want = kernels.downsample_mean(a, factors, backend="numpy")
    assert_bit_identical(kernels.downsample_mean(a, factors, backend="native"), want)
    assert want.shape == tuple(-(-n // f) for n, f in zip(a.shape, factors, strict=True))


@PROPERTY
@given(downsample_cases(INT_DTYPES))
def test_mode_native_equals_reference(case: tuple[np.ndarray, tuple[int, ...]]) -> None:
    a, factors = case
    want = kernels.downsample_mode(a, factors, backend="numpy")
    assert_bit_identical(kernels.downsample_mode(a, factors, backend="native"), want)


@PROPERTY
@given(
    dtype=st.sampled_from(ALL_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    narrow=st.booleans(),
    center=st.one_of(st.floats(-2000, 2000), st.floats(allow_nan=False, allow_infinity=False)),
    width=st.one_of(
        st.floats(0.5, 5000), st.floats(min_value=0, exclude_min=True, allow_infinity=False)
    ),
    data=st.data(),
)
def test_window_native_equals_reference(
    dtype: np.dtype,
    shape: tuple[int, ...],
    narrow: bool,
    center: float,
    width: float,
    data: st.DataObject,
) -> None:
    if narrow and dtype.kind in "iu":  # CT-like values
        info = np.iinfo(dtype)
        elements: st.SearchStrategy = st.integers(max(info.min, -1100), min(info.max, 3000))
    else:
        elements = value_strategy(dtype, narrow=False)
    a = data.draw(hnp.arrays(dtype, shape, elements=elements))
    want = kernels.window_to_uint8(a, center, width, backend="numpy")
    assert_bit_identical(kernels.window_to_uint8(a, center, width, backend="native"), want)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("factors", list(itertools.product([1, 2], repeat=3)), ids=str)
def test_extreme_values_every_dtype_and_factor(dtype: np.dtype, factors: tuple[int, ...]) -> None:
    """dtype min/max (and NaN/inf for floats) in odd and even shapes, all factor combinations."""
    if dtype.kind == "f":
        info = np.finfo(dtype)
        specials = [info.min, info.max, info.tiny, -info.tiny, 0.0, -0.0, np.inf, -np.inf, np.nan]
    else:
        iinfo = np.iinfo(dtype)
        specials = [iinfo.min, iinfo.max, iinfo.min + 1, iinfo.max - 1, 0, 1]
        if iinfo.min < 0:
            specials += [-1, -2]
    rng = np.random.default_rng(sum(factors) + dtype.num)
    for shape in [(3, 5, 7), (4, 6, 8), (1, 1, 1), (2, 1, 3)]:
        arrays = [rng.choice(np.array(specials, dtype=dtype), size=shape)]
        arrays += [np.full(shape, v, dtype=dtype) for v in specials]
        for a in arrays:
            want = kernels.downsample_mean(a, factors, backend="numpy")
            assert_bit_identical(kernels.downsample_mean(a, factors, backend="native"), want)
            if dtype.kind in "iu":
                want = kernels.downsample_mode(a, factors, backend="numpy")
                assert_bit_identical(kernels.downsample_mode(a, factors, backend="native"), want)
            for center, width in [(40.0, 400.0), (0.0, 1e-300), (-1e308, 1e308), (3.0, 0.5)]:
                want = kernels.window_to_uint8(a, center, width, backend="numpy")
                got = kernels.window_to_uint8(a, center, width, backend="native")
                assert_bit_identical(got, want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16], ids=str)
def test_window_every_small_integer_value(dtype: type[np.integer]) -> None:
    """Exhaustive over the 8/16-bit value range (large arrays take the lookup-table path in C;
    small ones, the direct path)."""
    info = np.iinfo(dtype)
    every = np.arange(int(info.min), int(info.max) + 1).astype(dtype)
    big = np.concatenate([every, every[::-1]]).reshape(2, -1)
    windows = [(40.0, 400.0), (-600.0, 1500.0), (0.0, 1e-9), (3.0, 0.7), (1e300, 1e-300)]
    for center, width in windows:
        want = kernels.window_to_uint8(big, center, width, backend="numpy")
        assert_bit_identical(kernels.window_to_uint8(big, center, width, backend="native"), want)
        small = every[::997][:50]
        want = kernels.window_to_uint8(small, center, width, backend="numpy")
        assert_bit_identical(kernels.window_to_uint8(small, center, width, backend="native"), want)


def test_empty_arrays() -> None:
    for dtype in ALL_DTYPES:
        for shape in [(0, 3, 3), (3, 0, 2), (2, 2, 0)]:
            a = np.zeros(shape, dtype=dtype)
            for backend in ("native", "numpy"):
                out = kernels.downsample_mean(a, backend=backend)
                assert out.shape == tuple(-(-n // 2) for n in shape)
                assert out.dtype == dtype
                assert kernels.window_to_uint8(a, 0, 1, backend=backend).shape == shape


# --------------------------------------------------------------------------------------------
# the reference itself: naive per-block loops and hand-computed examples


def naive_blocks(a: np.ndarray, factors: tuple[int, int, int]) -> dict[tuple[int, ...], list]:
    """Block values by explicit index arithmetic (edge index clamped), in (dz, dy, dx) order."""
    out_shape = [-(-n // f) for n, f in zip(a.shape, factors, strict=True)]
    blocks = {}
    for o in itertools.product(*(range(n) for n in out_shape)):
        values = []
        for d in itertools.product(*(range(f) for f in factors)):
            idx = tuple(
                min(oi * f + di, n - 1) for oi, f, di, n in zip(o, factors, d, a.shape, strict=True)
            )
            values.append(a[idx].item())
        blocks[o] = values
    return blocks


@settings(max_examples=80, deadline=None)
@given(downsample_cases(ALL_DTYPES, max_side=5))
def test_reference_matches_naive_loops(case: tuple[np.ndarray, tuple[int, ...]]) -> None:
    a, factors = case
    a3 = a if a.ndim == 3 else a[None]
    f3 = tuple(factors) if a.ndim == 3 else (1, *factors)
    mean = _native.downsample_mean_reference(a3, f3)
    mode = _native.downsample_mode_reference(a3, f3) if a.dtype.kind in "iu" else None
    for o, values in naive_blocks(a3, f3).items():
        count = len(values)
        if a.dtype.kind == "f":
            total = values[0]
            for v in values[1:]:
                total += v  # Python floats are float64: same order, same rounding
            want = np.array(total / count).astype(a.dtype)
            assert_bit_identical(np.asarray(mean[o]).reshape(1), want.reshape(1))
        else:
            assert int(mean[o]) == (sum(values) + count // 2) // count  # exact, floor division
            counts = Counter(values)
            top = max(counts.values())
            assert mode is not None
            assert int(mode[o]) == min(v for v, n in counts.items() if n == top)


@settings(max_examples=80, deadline=None)
@given(
    dtype=st.sampled_from(ALL_DTYPES),
    center=st.floats(-3000, 3000),
    width=st.floats(0.5, 5000),
    data=st.data(),
)
def test_window_reference_matches_formula(
    dtype: np.dtype, center: float, width: float, data: st.DataObject
) -> None:
    a = data.draw(hnp.arrays(dtype, (7,), elements=value_strategy(dtype, narrow=False)))
    got = _native.window_to_uint8_reference(a, center, width)
    lo = center - width / 2.0
    for x, g in zip(a.tolist(), got.tolist(), strict=True):
        y = (float(x) - lo) * 255.0 / width
        if math.isnan(y):
            want = 0
        elif math.isinf(y):
            want = 255 if y > 0 else 0
        else:
            want = min(max(math.floor(y + 0.5), 0), 255)
        assert g == want


@pytest.mark.parametrize("backend", ["native", "numpy"])
class TestHandExamples:
    def test_mean_rounds_half_up(self, backend: str) -> None:
        a = np.array([[1, 2], [3, 4]], dtype=np.int16)  # floor((10 + 2) / 4) = 3
        assert kernels.downsample_mean(a, backend=backend).tolist() == [[3]]
        a = np.array([[2, 3]], dtype=np.uint8)  # 2.5 -> 3
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[3]]
        a = np.array([[-2, -3]], dtype=np.int8)  # -2.5 -> -2 (half up, toward +inf)
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[-2]]

    def test_mean_negative_uses_floor_not_truncation(self, backend: str) -> None:
        # sum -7, count 4: floor(-5 / 4) = -2 (C truncation would give -1)
        a = np.array([[-1, -2], [-2, -2]], dtype=np.int32)
        assert kernels.downsample_mean(a, backend=backend).tolist() == [[-2]]
        a = np.array([[-1, -2]], dtype=np.int64)  # floor((-3 + 1) / 2) = -1
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[-1]]

    def test_mean_odd_edge_repeats_edge_value(self, backend: str) -> None:
        a = np.array([[1, 2, 3]], dtype=np.uint16)  # blocks [1, 2] and [3, 3]
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[2, 3]]
        a = np.array([[0, 0, 10], [0, 0, 10], [20, 20, 30]], dtype=np.int16)
        assert kernels.downsample_mean(a, backend=backend).tolist() == [[0, 10], [20, 30]]

    def test_mean_extremes_do_not_overflow(self, backend: str) -> None:
        for dtype in INT_DTYPES:
            info = np.iinfo(dtype)
            for v in (info.min, info.max):
                a = np.full((3, 3, 3), v, dtype=dtype)
                assert (kernels.downsample_mean(a, backend=backend) == v).all()
        a = np.array([[255, 255], [255, 254]], dtype=np.uint8)  # 255.25 -> 255
        assert kernels.downsample_mean(a, backend=backend).tolist() == [[255]]
        big = np.iinfo(np.int64).max
        a = np.array([[big, big - 1]], dtype=np.int64)  # (2 * big - 1 + 1) // 2 = big
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[big]]

    def test_mean_floats(self, backend: str) -> None:
        a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
        out = kernels.downsample_mean(a, backend=backend)
        assert out.dtype == np.float32 and out.tolist() == [[2.5]]
        a = np.array([[1.0, np.nan], [np.inf, 0.0], [np.inf, -np.inf]])
        assert np.isnan(kernels.downsample_mean(a, (2, 2), backend=backend)).tolist() == [
            [True],
            [True],
        ]
        a = np.array([[1.0, np.inf]])
        assert kernels.downsample_mean(a, (1, 2), backend=backend).tolist() == [[np.inf]]

    def test_mode_ties_go_to_smallest(self, backend: str) -> None:
        a = np.array([[1, 2], [2, 1]], dtype=np.uint8)
        assert kernels.downsample_mode(a, backend=backend).tolist() == [[1]]
        a = np.array([[5, 5], [3, 7]], dtype=np.int16)
        assert kernels.downsample_mode(a, backend=backend).tolist() == [[5]]
        a = np.array([[[4, 9], [9, 4]], [[-1, -1], [2, 2]]], dtype=np.int32)  # 3 tied pairs
        assert kernels.downsample_mode(a, backend=backend).tolist() == [[[-1]]]
        a = np.array([[7, 8, 9]], dtype=np.uint32)  # [7, 8] tie -> 7; [9, 9] -> 9
        assert kernels.downsample_mode(a, (1, 2), backend=backend).tolist() == [[7, 9]]

    def test_mode_odd_edges_repeat_edge_value(self, backend: str) -> None:
        # blocks: [0, 2, 0, 2] -> 0; [5, 5, 3, 3] -> 3; [1, 0, 1, 0] -> 0; [1, 1, 1, 1] -> 1
        a = np.array([[0, 2, 5], [0, 2, 3], [1, 0, 1]], dtype=np.int8)
        assert kernels.downsample_mode(a, backend=backend).tolist() == [[0, 3], [0, 1]]

    def test_window(self, backend: str) -> None:
        a = np.array([-1000, -160, 40, 240, 1000], dtype=np.int16)  # lo = -160, hi = 240
        out = kernels.window_to_uint8(a, 40, 400, backend=backend)
        assert out.dtype == np.uint8
        assert out.tolist() == [0, 0, 128, 255, 255]  # 40 -> 127.5 -> floor(128.0)
        f = np.array([np.nan, np.inf, -np.inf, 0.0, 0.5, -0.5, 0.49], dtype=np.float32)
        # y = (x + 0.5) * 255: 0 -> 127.5 -> 128; 0.5 -> 255; -0.5 -> 0; 0.49 -> 252.45 -> 252
        out = kernels.window_to_uint8(f, 0.0, 1.0, backend=backend)
        assert out.tolist() == [0, 255, 0, 128, 255, 0, 252]


# --------------------------------------------------------------------------------------------
# public API behaviour


@pytest.mark.parametrize("backend", ["native", "numpy", "auto"])
def test_layouts_are_normalised(backend: str) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(-500, 500, size=(5, 6, 7)).astype(np.int16)
    want_mean = kernels.downsample_mean(a, backend="numpy")
    want_mode = kernels.downsample_mode(a // 100, backend="numpy")
    want_win = kernels.window_to_uint8(a, 10, 300, backend="numpy")
    for variant in (np.asfortranarray(a), a.astype(">i2"), a[:, ::-1][:, ::-1]):
        assert_bit_identical(kernels.downsample_mean(variant, backend=backend), want_mean)
        assert_bit_identical(kernels.downsample_mode(variant // 100, backend=backend), want_mode)
        assert_bit_identical(kernels.window_to_uint8(variant, 10, 300, backend=backend), want_win)
    strided = np.zeros((5, 6, 14), dtype=np.int16)
    strided[:, :, ::2] = a
    assert_bit_identical(kernels.downsample_mean(strided[:, :, ::2], backend=backend), want_mean)


def test_2d_equals_3d_with_one_slice() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 9, size=(9, 11)).astype(np.uint16)
    for f in itertools.product([1, 2], repeat=2):
        for fn in (kernels.downsample_mean, kernels.downsample_mode):
            assert_bit_identical(fn(a, f), fn(a[None], (1, *f))[0])
    assert kernels.downsample_mean(a).shape == (5, 6)
    assert kernels.downsample_mean(a[None].repeat(3, axis=0)).shape == (2, 5, 6)


def test_outputs_are_new_arrays() -> None:
    a = np.arange(8, dtype=np.uint8).reshape(2, 4)
    for backend in ("native", "numpy"):
        for out in (
            kernels.downsample_mean(a, (1, 1), backend=backend),
            kernels.downsample_mode(a, (1, 1), backend=backend),
        ):
            assert not np.shares_memory(out, a)
            np.testing.assert_array_equal(out, a)


def test_native_releases_gil_and_is_thread_safe() -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 4, size=(6, 40, 40)).astype(np.uint8) for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: kernels.downsample_mode(x, backend="native"), arrays))
    for a, got in zip(arrays, results, strict=True):
        assert_bit_identical(got, kernels.downsample_mode(a, backend="numpy"))


# --------------------------------------------------------------------------------------------
# invalid input


@pytest.mark.parametrize("backend", ["native", "numpy", "auto"])
def test_invalid_input(backend: str) -> None:
    a2 = np.zeros((4, 4), dtype=np.int16)
    for fn in (kernels.downsample_mean, kernels.downsample_mode):
        with pytest.raises(InvalidInput, match=r"2-D .* or 3-D"):
            fn(np.zeros(4, dtype=np.int16), backend=backend)
        with pytest.raises(InvalidInput, match="got 4-D"):
            fn(np.zeros((2, 2, 2, 2), dtype=np.int16), backend=backend)
        for factors in [(3, 2), (0, 2), (2, 2, 2), (2,), (2.0, 2), (True, 2)]:
            with pytest.raises(InvalidInput, match="factor"):
                fn(a2, factors, backend=backend)
        for dtype in (np.uint64, np.bool_, np.complex64, np.float16, object):
            with pytest.raises(InvalidInput, match="unsupported dtype"):
                fn(a2.astype(dtype), backend=backend)
    for dtype in FLOAT_DTYPES:
        with pytest.raises(InvalidInput, match="integer"):
            kernels.downsample_mode(a2.astype(dtype), backend=backend)
    for center, width in [(0, 0), (0, -1), (0, np.nan), (0, np.inf), (np.nan, 1), (np.inf, 1)]:
        with pytest.raises(InvalidInput, match=r"width|center"):
            kernels.window_to_uint8(a2, center, width, backend=backend)
    with pytest.raises(InvalidInput, match="unsupported dtype"):
        kernels.window_to_uint8(a2.astype(np.uint64), 0, 1, backend=backend)


def test_invalid_backend() -> None:
    a = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(InvalidInput, match="backend"):
        kernels.downsample_mean(a, backend="gpu")
    with pytest.raises(InvalidInput, match="backend"):
        kernels.window_to_uint8(a, 0, 1, backend="c")


def test_native_backend_without_build_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "NATIVE_AVAILABLE", False)
    monkeypatch.setattr(_native, "native_build_error", "atlas._kernels is not compiled (test)")
    a = np.array([[1, 2], [3, 4]], dtype=np.int16)
    assert not kernels.native_available()
    for call in (
        lambda: kernels.downsample_mean(a, backend="native"),
        lambda: kernels.downsample_mode(a, backend="native"),
        lambda: kernels.window_to_uint8(a, 0, 1, backend="native"),
    ):
        with pytest.raises(InvalidInput, match="not compiled"):
            call()
    assert kernels.downsample_mean(a).tolist() == [[3]]  # auto falls back to numpy


def test_missing_extension_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_native.importlib, "import_module", fail)
    module, error = _native._load()
    assert module is None
    assert error is not None and "pip install -e ." in error


def test_extension_checks_its_own_arguments() -> None:
    import atlas._kernels as ext

    a = np.zeros((2, 2, 2), dtype=np.int16)
    with pytest.raises(TypeError, match="integer"):
        ext.downsample_mode(a.astype(np.float32), 2, 2, 2)
    with pytest.raises(TypeError, match="unsupported dtype"):
        ext.downsample_mean(a.astype(np.uint64), 2, 2, 2)
    with pytest.raises(ValueError, match="1 or 2"):
        ext.downsample_mean(a, 3, 2, 2)
    with pytest.raises(ValueError, match="3-D"):
        ext.downsample_mean(a[0], 2, 2, 2)
    with pytest.raises(ValueError, match="byte order"):
        ext.downsample_mean(a.astype(">i2"), 2, 2, 2)
    with pytest.raises(ValueError, match="width"):
        ext.window_to_uint8(a, 0.0, 0.0)
    with pytest.raises(ValueError, match="width"):
        ext.window_to_uint8(a, 0.0, -1.0)
