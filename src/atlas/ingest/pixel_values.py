"""Pixel values in real units.

The Modality LUT or rescale, RT dose scaling, MONOCHROME1 inversion and the choice of the
output dtype (see :mod:`atlas.ingest.pixels`).

MONOCHROME1 is turned into MONOCHROME2 semantics in *stored* units before any rescale
(``value' = min + max - value`` over the whole volume). The Modality LUT or *Rescale
Slope/Intercept* (per slice, or per frame from the *Pixel Value Transformation* functional
group) is applied through :func:`pydicom.pixels.apply_modality_lut`, one float64 slice at a
time. Output dtype: ``int16`` for CT whose values fit; otherwise the smallest of
``uint8/uint16/int16/int32`` that holds integral values (``int64`` beyond), ``float32`` when a
value is not integral.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from atlas.dicom.functional_groups import functional_group_item, is_enhanced
from atlas.errors import InvalidInput

__all__ = ["ValueMap", "first_positive", "invert_monochrome1", "rescale", "value_map"]


def first_positive(*values: object) -> float | None:
    """The first of ``values`` that is a positive finite number, else ``None``."""
    for value in values:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if number > 0 and np.isfinite(number):
            return number
    return None


@dataclass(frozen=True)
class ValueMap:
    """Modality LUT / rescale of one slice.

    A data set for ``apply_modality_lut`` (``None`` for identity) and an extra factor (RT
    *Dose Grid Scaling*).
    """

    lut: Dataset | None
    scale: float = 1.0

    @property
    def identity(self) -> bool:
        """Whether the map leaves values unchanged."""
        return self.lut is None and self.scale == 1.0

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` in real units (a new array unless the map is the identity)."""
        out = arr if self.lut is None else apply_modality_lut(arr, self.lut)
        if self.scale != 1.0:
            out = out.astype(np.float64) * self.scale
        return out


def value_map(ds: Dataset, frame: int) -> ValueMap:
    """The value map of frame ``frame`` (0-based) of ``ds``.

    Its *Pixel Value Transformation* functional group (enhanced objects), else the top-level
    Modality LUT or Rescale Slope/Intercept; RT dose also scales by *Dose Grid Scaling*.
    """
    scale = 1.0
    if str(ds.get("Modality", "")).upper() == "RTDOSE":
        scale = first_positive(ds.get("DoseGridScaling")) or 1.0
    item = (
        functional_group_item(ds, "PixelValueTransformationSequence", frame)
        if is_enhanced(ds)
        else None
    )
    source = item if item is not None else ds
    if source.get("ModalityLUTSequence"):
        return ValueMap(ds if item is None else _lut_dataset(ds, item), scale)
    if "RescaleSlope" in source and "RescaleIntercept" in source:
        try:
            slope = float(source.RescaleSlope)
            intercept = float(source.RescaleIntercept)
        except (TypeError, ValueError):
            raise InvalidInput("invalid Rescale Slope/Intercept") from None
        if slope == 1.0 and intercept == 0.0:
            return ValueMap(None, scale)
        lut = Dataset()
        lut.RescaleSlope = slope
        lut.RescaleIntercept = intercept
        return ValueMap(lut, scale)
    return ValueMap(None, scale)


def _lut_dataset(ds: Dataset, item: Dataset) -> Dataset:
    lut = Dataset()
    lut.ModalityLUTSequence = item.ModalityLUTSequence
    if hasattr(ds, "file_meta"):
        lut.file_meta = ds.file_meta
    return lut


def _choose_dtype(lo: float, hi: float, integral: bool, modality: str) -> np.dtype:
    if not integral:
        return np.dtype(np.float32)
    if modality == "CT" and lo >= -32768 and hi <= 32767:
        return np.dtype(np.int16)
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def invert_monochrome1(raw: np.ndarray) -> None:
    """``min + max - value`` over the whole volume, in place, in stored units."""
    if raw.size == 0:
        return
    lo = raw.min()
    hi = raw.max()
    if np.issubdtype(raw.dtype, np.integer):
        total = int(lo) + int(hi)
        for z in range(raw.shape[0]):
            raw[z] = (total - raw[z].astype(np.int64)).astype(raw.dtype)
    else:
        for z in range(raw.shape[0]):
            raw[z] = (lo + hi) - raw[z]


def rescale(raw: np.ndarray, maps: Sequence[ValueMap], modality: str) -> np.ndarray:
    """Apply each slice's value map; choose the output dtype from the actual values."""
    if all(m.identity for m in maps) and not np.issubdtype(raw.dtype, np.floating):
        lo, hi = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        dtype = _choose_dtype(lo, hi, True, modality)
        return raw if dtype == raw.dtype else raw.astype(dtype)
    lo, hi, integral = np.inf, -np.inf, True
    for z, value_map in enumerate(maps):
        values = value_map.apply(raw[z])
        if values.size == 0:
            continue
        lo = min(lo, float(values.min()))
        hi = max(hi, float(values.max()))
        if integral and np.issubdtype(values.dtype, np.floating):
            integral = bool(np.all(np.isfinite(values)) and np.array_equal(values, np.rint(values)))
    if lo > hi:
        lo = hi = 0.0
    dtype = _choose_dtype(lo, hi, integral, modality)
    out = raw if dtype == raw.dtype else np.empty(raw.shape, dtype=dtype)
    for z, value_map in enumerate(maps):
        out[z] = value_map.apply(raw[z]).astype(dtype, copy=False)
    return out
