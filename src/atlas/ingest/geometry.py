"""Patient-space geometry of DICOM series: splitting, slice order, spacing, direction.

Radiologists' viewers never trust *Instance Number* to order slices: they project each
*Image Position (Patient)* onto the slice normal (the cross product of the row and column
direction cosines of *Image Orientation (Patient)*) and sort by that distance. This module does
the same, and splits a series that mixes image sizes, orientations, acquisitions or repeated
positions into consistent volumes.

Conventions (those of :class:`atlas.ingest.model.Volume`): array axes are ``(z, y, x)``;
``direction`` is a 3x3 matrix whose column ``a`` is the LPS unit vector of array axis ``a``:
column 0 the slice normal, column 1 the column direction cosines (moving down the rows,
``IOP[3:6]``), column 2 the row direction cosines (``IOP[0:3]``). ``spacing`` is
``(slice spacing, PixelSpacing[0], PixelSpacing[1])``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atlas.dicom.geometry_values import MAX_GEOMETRY_MM
from atlas.errors import InvalidInput
from atlas.ingest.model import InstanceInfo, Quarantined, SeriesGroup

__all__ = [
    "MAX_GEOMETRY_MM",
    "ORIENTATION_TOLERANCE",
    "POSITION_TOLERANCE_MM",
    "SLICE_POSITION_TOLERANCE",
    "SPACING_RELATIVE_TOLERANCE",
    "StackGeometry",
    "default_direction",
    "direction_matrix",
    "distances_along_normal",
    "same_orientation",
    "same_spacing",
    "slice_normal",
    "sort_by_position",
    "spacing_along_normal",
    "split_series",
    "stack_geometry",
]

#: two orientations whose direction cosines differ by less than this are the same
ORIENTATION_TOLERANCE = 1e-4
#: two slices closer than this along the normal share a position (mm)
POSITION_TOLERANCE_MM = 1e-3
#: steps that differ from the median step by more than this fraction make a stack irregular
#: (only for describing the steps in a note; regularity itself is decided per slice, below)
SPACING_RELATIVE_TOLERANCE = 0.01
#: a stack is regular when every slice lies within this fraction of the step (and at least
#: POSITION_TOLERANCE_MM) of the grid through its first and last slice; otherwise ingest
#: splits it into regular parts (docs/decisions/0015-regular-volumes-and-invalid-geometry.md)
SLICE_POSITION_TOLERANCE = 0.1
#: a gap within this fraction of k x the median step counts as k-1 missing slices
_GAP_TOLERANCE = 0.1
#: in-plane drift of the slice positions (fraction of the stack length) that counts as shear
_SHEAR_TOLERANCE = 0.01


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """The unit slice normal (row cosines x column cosines) of an *Image Orientation (Patient)*.

    Raises :class:`InvalidInput` when ``iop`` does not hold six values or its two direction
    vectors are parallel or zero.
    """
    if len(iop) != 6:
        raise InvalidInput(f"Image Orientation (Patient) needs 6 values, got {len(iop)}")
    row = np.asarray(iop[0:3], dtype=np.float64)
    col = np.asarray(iop[3:6], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if not np.isfinite(norm) or norm < 1e-6:
        raise InvalidInput("Image Orientation (Patient) has parallel or zero direction vectors")
    return normal / norm


def same_orientation(
    a: Sequence[float], b: Sequence[float], tolerance: float = ORIENTATION_TOLERANCE
) -> bool:
    """Whether two *Image Orientation (Patient)* values agree within ``tolerance``."""
    return len(a) == len(b) == 6 and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def default_direction() -> np.ndarray:
    """The direction of an image without patient geometry: z -> S, y -> P, x -> L.

    The documented default of :func:`atlas.ome.write_image` (columns z, y, x), i.e. the
    identity in ITK's (x, y, z) order: array x runs along patient x (L), y along y (P), z along
    z (S).
    """
    return np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def direction_matrix(iop: Sequence[float] | None) -> np.ndarray:
    """The 3x3 direction matrix (columns: normal, column cosines, row cosines) of ``iop``.

    The row and column direction cosines are kept exactly as given (oblique acquisitions
    included); only the normal is computed. ``None`` gives :func:`default_direction`.
    """
    if iop is None:
        return default_direction()
    direction = np.empty((3, 3), dtype=np.float64)
    direction[:, 0] = slice_normal(iop)
    direction[:, 1] = np.asarray(iop[3:6], dtype=np.float64)
    direction[:, 2] = np.asarray(iop[0:3], dtype=np.float64)
    return direction


def distances_along_normal(
    positions: Sequence[Sequence[float]], iop: Sequence[float]
) -> list[float]:
    """Each *Image Position (Patient)* projected onto the slice normal of ``iop`` (mm)."""
    normal = slice_normal(iop)
    return [float(np.dot(np.asarray(p, dtype=np.float64), normal)) for p in positions]


def _has_geometry(inst: InstanceInfo) -> bool:
    return (
        inst.image_position is not None
        and len(inst.image_position) == 3
        and inst.image_orientation is not None
        and len(inst.image_orientation) == 6
    )


def _instance_key(inst: InstanceInfo) -> tuple[int, str]:
    number = inst.instance_number if inst.instance_number is not None else 2**31
    return (number, inst.ref.display)


def sort_by_position(
    instances: Sequence[InstanceInfo],
) -> tuple[list[InstanceInfo], list[float]]:
    """Order single-frame instances by their position along the slice normal (ascending).

    Returns the ordered instances and their distances along the normal of the first
    instance's orientation (mm). Ties keep *Instance Number* order. A single instance
    without geometry gives ``([inst], [0.0])``; several instances need *Image Position
    (Patient)* and *Image Orientation (Patient)* each, else :class:`InvalidInput`.
    """
    items = sorted(instances, key=_instance_key)
    if not items:
        return [], []
    if len(items) == 1 and not _has_geometry(items[0]):
        return items, [0.0]
    if not all(_has_geometry(i) for i in items):
        raise InvalidInput("cannot order slices: some lack Image Position/Orientation (Patient)")
    iop = items[0].image_orientation
    assert iop is not None
    dists = distances_along_normal([i.image_position or () for i in items], iop)
    order = sorted(range(len(items)), key=lambda k: dists[k])  # stable: ties keep order
    return [items[k] for k in order], [dists[k] for k in order]


def spacing_along_normal(
    positions: Sequence[float],
    relative_tolerance: float = SPACING_RELATIVE_TOLERANCE,
) -> tuple[float, bool, str | None]:
    """Slice spacing of sorted positions along the normal, and whether it is regular.

    Returns ``(spacing, regularly_spaced, note)``. A stack is regular when every position
    lies within :data:`SLICE_POSITION_TOLERANCE` of the step of the evenly spaced grid through
    the first and last position (:func:`on_grid`); ``spacing`` is then that grid's step.
    Otherwise ``spacing`` is the median step (``0.0`` with fewer than two positions) and
    ``note`` says why in words an operator can act on: missing slices (a gap of about k x the
    median step), repeated positions, or irregular steps (steps that differ from the median by
    more than ``relative_tolerance``).
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.size < 2:
        return 0.0, True, None
    steps = np.diff(pos)
    step = float(np.median(np.abs(steps)))
    if step <= POSITION_TOLERANCE_MM:
        return 0.0, False, "slices repeat the same position along the normal"
    if on_grid(pos):
        return abs(float(pos[-1] - pos[0])) / (pos.size - 1), True, None
    tol = max(relative_tolerance * step, POSITION_TOLERANCE_MM)
    off = np.abs(np.abs(steps) - step) > tol
    bad = np.abs(steps[off])
    ratios = bad / step
    if (bad <= POSITION_TOLERANCE_MM).any():
        return step, False, "slices repeat the same position along the normal"
    gaps = np.all(ratios >= 1.5) and np.all(np.abs(ratios - np.round(ratios)) <= _GAP_TOLERANCE)
    if off.any() and gaps:
        missing = int(np.sum(np.round(ratios) - 1))
        where = ", ".join(str(int(k) + 1) for k in np.flatnonzero(off)[:5])
        more = "" if int(off.sum()) <= 5 else ", ..."
        return (
            step,
            False,
            f"about {missing} missing slice(s): {int(off.sum())} gap(s) of about "
            f"{', '.join(f'{r:.0f}' for r in sorted(set(np.round(ratios).tolist())))}x the "
            f"{step:.4g} mm step (after slice {where}{more})",
        )
    return (
        step,
        False,
        f"irregular slice spacing: steps from {float(np.min(np.abs(steps))):.4g} to "
        f"{float(np.max(np.abs(steps))):.4g} mm (median {step:.4g} mm)",
    )


def on_grid(positions: Sequence[float] | np.ndarray) -> bool:
    """Whether sorted positions lie on one evenly spaced grid (first to last, same step).

    Each position may deviate from the grid through the first and last position by at most
    :data:`SLICE_POSITION_TOLERANCE` of the step (and at least :data:`POSITION_TOLERANCE_MM`).
    Fewer than three positions are always on a grid; repeated positions never are.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.size < 2:
        return True
    step = float(pos[-1] - pos[0]) / (pos.size - 1)
    if abs(step) <= POSITION_TOLERANCE_MM:
        return False
    grid = pos[0] + step * np.arange(pos.size)
    tol = max(SLICE_POSITION_TOLERANCE * abs(step), POSITION_TOLERANCE_MM)
    return bool(np.all(np.abs(pos - grid) <= tol))


@dataclass(frozen=True)
class StackGeometry:
    """Geometry of one volume in the :class:`~atlas.ingest.model.Volume` convention."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    #: distance of each z slice along the normal (mm)
    positions: list[float]
    regularly_spaced: bool
    note: str | None
    #: the Image Position (Patient) of each z slice (``None`` without patient geometry)
    slice_origins: list[tuple[float, float, float]] | None = None
    #: the constant LPS step (mm) from one slice's Image Position to the next when it is not
    #: along the normal (gantry tilt: a sheared affine); ``None`` otherwise
    slice_step: tuple[float, float, float] | None = None


def stack_geometry(
    positions: Sequence[Sequence[float]] | None,
    iop: Sequence[float] | None,
    pixel_spacing: Sequence[float] | None,
    fallback_slice_spacing: float | None,
    n_slices: int,
) -> StackGeometry:
    """Geometry of ``n_slices`` slices already ordered along the normal.

    ``positions`` are the *Image Position (Patient)* of each slice in order, or ``None`` for
    objects without patient geometry (then :func:`default_direction`, origin 0 and slices
    ``fallback_slice_spacing`` apart). ``fallback_slice_spacing`` (e.g. *Slice Thickness* or
    *Spacing Between Slices*) is the slice spacing of single slices. In-plane spacing comes
    from ``pixel_spacing`` (row spacing, column spacing).

    Nothing is defaulted silently: a missing ``pixel_spacing`` (or single-slice
    ``fallback_slice_spacing``) becomes 1.0 mm *with a note* saying it is a placeholder, and
    a ``pixel_spacing`` that is not two positive finite numbers raises :class:`InvalidInput`.
    """
    notes: list[str] = []
    if pixel_spacing is None or len(pixel_spacing) == 0:
        dy, dx = 1.0, 1.0
        notes.append("no Pixel Spacing: the in-plane spacing of 1.0 mm is a placeholder")
    else:
        values = [float(v) for v in pixel_spacing]
        if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
            raise InvalidInput("invalid Pixel Spacing: needs two positive finite numbers")
        if max(values) > MAX_GEOMETRY_MM:
            raise InvalidInput(f"invalid Pixel Spacing: exceeds {MAX_GEOMETRY_MM:g} mm")
        dy, dx = values
    fallback = float(fallback_slice_spacing) if fallback_slice_spacing is not None else 0.0
    if not (np.isfinite(fallback) and 0 < fallback <= MAX_GEOMETRY_MM):
        fallback = 0.0
    single_z = fallback or 1.0
    if n_slices == 1 and not fallback:
        notes.append(
            "no valid Slice Thickness or Spacing Between Slices: the slice spacing of 1.0 mm "
            "is a placeholder"
        )
    if positions is None or iop is None or len(positions) == 0:
        return StackGeometry(
            spacing=(single_z, dy, dx),
            origin=(0.0, 0.0, 0.0),
            direction=default_direction(),
            positions=[k * single_z for k in range(n_slices)],
            regularly_spaced=True,
            note="; ".join(notes) or None,
        )
    if len(positions) != n_slices:
        raise InvalidInput(f"{len(positions)} slice positions for {n_slices} slices")
    located = np.asarray(positions, dtype=np.float64).reshape(n_slices, 3)
    if not np.all(np.isfinite(located)):
        raise InvalidInput("invalid Image Position (Patient): a value is not a finite number")
    if float(np.max(np.abs(located))) > MAX_GEOMETRY_MM:
        raise InvalidInput(
            f"invalid Image Position (Patient): a coordinate exceeds {MAX_GEOMETRY_MM:g} mm"
        )
    direction = direction_matrix(iop)
    dists = distances_along_normal(positions, iop)
    origin = tuple(float(v) for v in positions[0])
    origins = [(float(p[0]), float(p[1]), float(p[2])) for p in located]
    if n_slices == 1:
        return StackGeometry(
            spacing=(single_z, dy, dx),
            origin=(origin[0], origin[1], origin[2]),
            direction=direction,
            positions=dists,
            regularly_spaced=True,
            note="; ".join(notes) or None,
            slice_origins=origins,
        )
    step, regular, note = spacing_along_normal(dists)
    if note:
        notes.append(note)
    if step <= 0:
        step = single_z
    # Positions that drift within the image plane (gantry tilt, shear) are not described by
    # origin + direction * spacing. A constant step (every slice on first + k * step) is
    # written exactly as a sheared affine (decision 0027); a varying drift is flagged rather
    # than silently resampled.
    first, last = located[0], located[-1]
    along = float(np.dot(last - first, direction[:, 0]))
    drift = float(np.linalg.norm((last - first) - along * direction[:, 0]))
    sheared = drift > _SHEAR_TOLERANCE * abs(along) + POSITION_TOLERANCE_MM
    slice_step = _constant_step(located, direction, (dy, dx)) if sheared and regular else None
    if slice_step is not None:
        sheared = False  # described exactly by a sheared affine (decision 0027)
    if sheared:
        notes.append(
            f"slice positions drift {drift:.4g} mm within the image plane over the stack "
            "(gantry tilt or sheared acquisition); the affine does not describe every slice"
        )
        regular = False
    return StackGeometry(
        spacing=(step, dy, dx),
        origin=(origin[0], origin[1], origin[2]),
        direction=direction,
        positions=dists,
        regularly_spaced=regular,
        note="; ".join(notes) or None,
        slice_origins=origins,
        slice_step=slice_step,
    )


def _constant_step(
    located: np.ndarray, direction: np.ndarray, pixel_spacing: tuple[float, float]
) -> tuple[float, float, float] | None:
    """The constant step between consecutive Image Positions, if every slice is on it.

    Each slice may deviate from ``first + k * step`` by a tenth of the step along the normal
    (:data:`SLICE_POSITION_TOLERANCE`, as :func:`on_grid`) and by a tenth of a pixel within the
    image plane (at least :data:`POSITION_TOLERANCE_MM`); otherwise ``None`` (varying shear).
    """
    n = located.shape[0]
    step = (located[-1] - located[0]) / (n - 1)
    dev = located - (located[0] + np.arange(n)[:, None] * step[None, :])
    normal = direction[:, 0]
    along = np.abs(dev @ normal)
    inplane = np.linalg.norm(dev - np.outer(dev @ normal, normal), axis=1)
    step_normal = abs(float(step @ normal))
    if step_normal <= POSITION_TOLERANCE_MM:
        return None
    tol_normal = max(SLICE_POSITION_TOLERANCE * step_normal, POSITION_TOLERANCE_MM)
    tol_plane = max(0.1 * min(pixel_spacing), POSITION_TOLERANCE_MM)
    if np.all(along <= tol_normal) and np.all(inplane <= tol_plane):
        return (float(step[0]), float(step[1]), float(step[2]))
    return None


def _cluster_positions(dists: Sequence[float]) -> list[list[int]]:
    """Indices grouped by position along the normal (within the position tolerance)."""
    order = sorted(range(len(dists)), key=lambda k: dists[k])
    clusters: list[list[int]] = []
    for k in order:
        if clusters and dists[k] - dists[clusters[-1][0]] <= POSITION_TOLERANCE_MM:
            clusters[-1].append(k)
        else:
            clusters.append([k])
    return clusters


def _has_duplicates(items: Sequence[InstanceInfo], iop: Sequence[float]) -> bool:
    dists = distances_along_normal([i.image_position or () for i in items], iop)
    return any(len(c) > 1 for c in _cluster_positions(dists))


def _split_positions(
    items: list[InstanceInfo],
) -> tuple[list[list[InstanceInfo]], list[Quarantined]]:
    """Split one same-size, same-orientation group so that no two slices share a position."""
    iop = items[0].image_orientation
    assert iop is not None
    if not _has_duplicates(items, iop):
        return [sort_by_position(items)[0]], []
    # Positions collide: separate acquisitions first (re-scans, multi-phase series).
    by_acq: dict[int | None, list[InstanceInfo]] = defaultdict(list)
    for inst in items:
        by_acq[inst.acquisition_number].append(inst)
    groups = (
        [by_acq[k] for k in sorted(by_acq, key=lambda a: (a is None, a or 0))]
        if len(by_acq) > 1
        else [items]
    )
    volumes: list[list[InstanceInfo]] = []
    quarantined: list[Quarantined] = []
    for group in groups:
        if not _has_duplicates(group, iop):
            volumes.append(sort_by_position(group)[0])
            continue
        ordered = sorted(group, key=_instance_key)
        dists = distances_along_normal([i.image_position or () for i in ordered], iop)
        clusters = _cluster_positions(dists)
        counts = Counter(len(c) for c in clusters)
        if len(counts) == 1 and len(clusters) > 1:
            # Every position repeats n times (echoes, phases, b-values): n volumes, the k-th
            # occurrence (in instance-number order) of each position in volume k.
            (n,) = counts
            for k in range(n):
                volumes.append([ordered[c[k]] for c in clusters])
        else:
            keep = [ordered[min(c)] for c in clusters]
            for c in clusters:
                for k in sorted(c)[1:]:
                    quarantined.append(
                        Quarantined(
                            ordered[k].ref,
                            "duplicate slice position in its series (another instance at "
                            "the same position was kept)",
                        )
                    )
            volumes.append(sort_by_position(keep)[0])
    return volumes, quarantined


def same_spacing(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two in-plane spacings agree (relative :data:`SPACING_RELATIVE_TOLERANCE` / 100).

    Two absent spacings agree, an absent and a present one do not.
    """
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        abs(x - y) <= SPACING_RELATIVE_TOLERANCE / 100 * max(abs(x), abs(y))
        for x, y in zip(a, b, strict=True)
    )


def split_series(
    group: SeriesGroup,
) -> tuple[list[list[InstanceInfo]], list[Quarantined]]:
    """Split one series into consistent volumes, each ordered along its slice normal.

    A volume's slices share image size (rows, columns, samples per pixel), orientation
    (within :data:`ORIENTATION_TOLERANCE`) and in-plane pixel spacing (one affine describes
    them all), and no two share a position. Where positions
    collide, the series is split by *Acquisition Number*; positions that still repeat the
    same number of times everywhere become one volume per repetition, and stray repeats are
    quarantined. Multi-frame objects (enhanced or legacy) are a volume each, ordered later
    from their per-frame functional groups; single-frame objects without patient geometry
    (CR, DX, US, secondary capture) are a 2-D volume each. Objects without pixel data, and
    objects whose geometry attributes are present but invalid
    (:attr:`~atlas.ingest.model.InstanceInfo.geometry_problem`), are quarantined.

    Volumes are not yet split at gaps: :func:`atlas.ingest.parts.regular_parts` does that once
    the pixels are loaded, so that labels are mapped on the whole stack first.
    """
    volumes: list[list[InstanceInfo]] = []
    quarantined: list[Quarantined] = []
    by_shape: dict[tuple[int | None, int | None, int], list[InstanceInfo]] = defaultdict(list)
    for inst in sorted(group.instances, key=_instance_key):
        if not inst.has_pixel_data:
            quarantined.append(Quarantined(inst.ref, "no pixel data"))
        elif inst.geometry_problem:
            quarantined.append(Quarantined(inst.ref, inst.geometry_problem))
        elif inst.number_of_frames > 1:
            volumes.append([inst])
        else:
            by_shape[(inst.rows, inst.columns, inst.samples_per_pixel)].append(inst)
    for shape_group in by_shape.values():
        located = [i for i in shape_group if _has_geometry(i)]
        volumes.extend([i] for i in shape_group if not _has_geometry(i))
        clusters: list[list[InstanceInfo]] = []
        for inst in located:
            assert inst.image_orientation is not None
            for cluster in clusters:
                reference = cluster[0].image_orientation
                assert reference is not None
                if same_orientation(reference, inst.image_orientation) and same_spacing(
                    cluster[0].pixel_spacing, inst.pixel_spacing
                ):
                    cluster.append(inst)
                    break
            else:
                clusters.append([inst])
        for cluster in clusters:
            try:
                vols, quar = _split_positions(cluster)
            except InvalidInput as exc:
                quarantined.extend(Quarantined(i.ref, exc.message) for i in cluster)
                continue
            volumes.extend(vols)
            quarantined.extend(quar)
    return volumes, quarantined
