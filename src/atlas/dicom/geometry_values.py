"""Validation of the geometry attributes of one DICOM header (no silent defaults).

A header that *has* an *Image Position (Patient)*, *Image Orientation (Patient)*, *Pixel
Spacing* or *Imager Pixel Spacing* whose value cannot describe a voxel grid (the wrong number of
values, text that is not a number, NaN or infinity, a spacing that is zero or negative, direction
cosines that are not two perpendicular unit vectors) would otherwise be read as if the attribute
were absent: a default 1.0 mm spacing, or a slice split off its series without a word. Ingest
quarantines such an instance instead, with the reason this module returns (see
``docs/decisions/0015-regular-volumes-and-invalid-geometry.md``). Absent attributes are not
problems here: an image without patient geometry (CR, secondary capture) is a 2-D image.

Reasons name the attribute and what is wrong with it, never its value (values are free text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MAX_GEOMETRY_MM",
    "ORTHONORMAL_TOLERANCE",
    "finite_number",
    "geometry_problem",
    "orientation_problem",
    "vector_problem",
]

#: direction cosines whose squared length differs from 1, or whose dot product differs from 0,
#: by more than this are not an orientation (the writer's own check of D^T D uses 1e-3)
ORTHONORMAL_TOLERANCE = 1e-3
#: the largest coordinate or spacing accepted (mm): no scanner places a voxel a kilometre away,
#: and the index's float32 columns would lose millimetres beyond this, or overflow to infinity
MAX_GEOMETRY_MM = 1e6


def _values(value: Any) -> list[Any] | None:
    """The values of a (possibly multi-valued) attribute; ``None`` when absent or empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        parts = [p.strip(" \x00") for p in value.split("\\")]
        return parts if any(parts) else None
    if isinstance(value, Iterable):
        items = list(value)
        return items or None
    return [value]


def finite_number(value: Any) -> float | None:
    """``float(value)`` when it is a finite number, else ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def vector_problem(value: Any, n: int, name: str, *, positive: bool = False) -> str | None:
    """Why ``value`` is not valid geometry, or ``None`` when it is.

    Valid geometry is ``n`` finite numbers (all ``> 0`` when ``positive``) of at most
    :data:`MAX_GEOMETRY_MM` in magnitude. An absent or empty value is not a problem
    (``None``).
    """
    values = _values(value)
    if values is None:
        return None
    if len(values) != n:
        return f"invalid {name}: {len(values)} value(s), needs {n}"
    numbers = [finite_number(v) for v in values]
    if any(x is None for x in numbers):
        return f"invalid {name}: a value is not a finite number (NaN, infinite or not numeric)"
    if positive and any(x is not None and x <= 0 for x in numbers):
        return f"invalid {name}: values must be positive (a spacing of zero or less)"
    if any(x is not None and abs(x) > MAX_GEOMETRY_MM for x in numbers):
        return f"invalid {name}: a value exceeds {MAX_GEOMETRY_MM:g} mm"
    return None


def orientation_problem(value: Any) -> str | None:
    """Why an *Image Orientation (Patient)* value is not two perpendicular unit vectors."""
    name = "Image Orientation (Patient)"
    problem = vector_problem(value, 6, name)
    if problem is not None:
        return problem
    values = _values(value)
    if values is None:
        return None
    v = [float(x) for x in values]
    row, col = v[0:3], v[3:6]
    # squared lengths: the writer checks D^T D against the identity with the same tolerance
    row_norm2 = sum(x * x for x in row)
    col_norm2 = sum(x * x for x in col)
    if abs(row_norm2 - 1) > ORTHONORMAL_TOLERANCE or abs(col_norm2 - 1) > ORTHONORMAL_TOLERANCE:
        return f"invalid {name}: the direction cosines are not unit vectors"
    if abs(sum(a * b for a, b in zip(row, col, strict=True))) > ORTHONORMAL_TOLERANCE:
        return f"invalid {name}: the row and column directions are not perpendicular"
    return None


def geometry_problem(
    *,
    position: Any = None,
    orientation: Any = None,
    pixel_spacing: Any = None,
    imager_pixel_spacing: Any = None,
    located: bool = True,
) -> str | None:
    r"""The first problem of a header's geometry attributes (raw values), or ``None``.

    Each argument is the attribute's value as read (a string with ``\`` separators, a
    sequence of strings or numbers, or ``None`` when absent). The spacings are problems only
    for ``located`` images (with patient position or orientation), whose voxels they place in
    patient space; an image without patient geometry keeps a placeholder spacing and a note.
    """
    spacing_problem = (
        vector_problem(pixel_spacing, 2, "Pixel Spacing", positive=True)
        or vector_problem(imager_pixel_spacing, 2, "Imager Pixel Spacing", positive=True)
        if located
        else None
    )
    return (
        vector_problem(position, 3, "Image Position (Patient)")
        or orientation_problem(orientation)
        or spacing_problem
    )
