"""Labels from DICOM SEG, RTSTRUCT and NIfTI, on the voxel grid of the image they annotate.

Each reader returns an :class:`~atlas.ingest.model.LabelVolume` whose ``mask`` has exactly the
``(z, y, x)`` shape of the :class:`~atlas.ingest.model.Volume` it was aligned to. Alignment is
geometric (patient coordinates, LPS millimetres), never by file order:

- **SEG**: each frame's ``ImagePositionPatient`` is matched to a slice of the volume; the frame
  must lie on the volume's grid (same orientation, rows, columns and pixel spacing). Frames
  without a plane position are matched through the source image they were derived from.
  Label value = segment number. Where segments overlap, the *later* (higher-numbered) segment
  wins. FRACTIONAL segments are thresholded at half their maximum value.
- **RTSTRUCT**: ``CLOSED_PLANAR`` contours are mapped into voxel coordinates with the inverse
  of the volume's affine (so oblique images work), assigned to the slice within half a slice
  gap, and filled with the even-odd rule (contours of one ROI on one slice are XOR-ed, so inner
  contours make holes). A voxel belongs to a contour when its *centre* lies inside the polygon
  (:func:`skimage.draw.polygon`). Label values are ``1..n`` in ascending ROI number order over
  the ROIs that have closed planar contours; later ROIs win where they overlap (so a tumour
  drawn inside its organ stays visible). Contours that reference images outside this volume
  (another series of the same frame of reference) are skipped.
- **NIfTI**: the file's RAS+ affine is converted to LPS+ (``diag(-1, -1, 1)``) and must map
  the same voxel centres as the volume's, up to a permutation/flip of the axes (which is
  undone), within a tolerance.

Geometry mismatches raise :class:`~atlas.errors.InvalidInput` with the reason; messages never
contain original UIDs or other identifying values.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.ingest.model import LabelVolume, Volume

__all__ = [
    "GeometryMismatch",
    "nifti_to_labels",
    "referenced_instance_uids",
    "referenced_series_uids",
    "rtstruct_to_labels",
    "seg_to_labels",
]

_SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
}
_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------
# geometry of the target volume


class _Grid:
    """The voxel grid of a :class:`Volume`: LPS points <-> continuous ``(z, y, x)`` indices.

    Slices may be irregularly spaced: the position of slice ``k`` along the slice axis is taken
    from ``volume.slice_positions`` (relative to slice 0) when it has one entry per slice,
    else ``k * spacing[0]``.
    """

    def __init__(self, volume: Volume) -> None:
        shape = tuple(int(s) for s in volume.pixels.shape[-3:])
        if len(shape) != 3:
            raise InvalidInput("labels need a 3D image volume (z, y, x)")
        self.shape: tuple[int, int, int] = (shape[0], shape[1], shape[2])
        self.direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
        self.spacing = np.asarray(volume.spacing, dtype=np.float64).reshape(3)
        self.origin = np.asarray(volume.origin, dtype=np.float64).reshape(3)
        if np.any(self.spacing <= 0) or abs(np.linalg.det(self.direction)) < 1e-6:
            raise InvalidInput("the image volume has degenerate geometry (spacing or direction)")
        # The matrix whose inverse maps LPS offsets to mm along (z, y, x): for a sheared stack
        # (gantry tilt) its first column is the slice step per mm along the normal, so a point
        # on slice k is measured within the plane from slice k's own first voxel.
        self.frame = self.direction.copy()
        if volume.slice_step is not None:
            self.frame[:, 0] = np.asarray(volume.slice_step, dtype=np.float64) / self.spacing[0]
        self.inv_direction = np.linalg.inv(self.frame)
        nz = self.shape[0]
        positions = [float(p) for p in (volume.slice_positions or [])]
        if len(positions) == nz and nz > 1:
            offsets = np.asarray(positions) - positions[0]
            if offsets[-1] < 0:  # positions measured against the slice axis
                offsets = -offsets
            if np.any(np.diff(offsets) <= 0):
                offsets = np.arange(nz) * self.spacing[0]
        else:
            offsets = np.arange(nz) * self.spacing[0]
        self.offsets = np.asarray(offsets, dtype=np.float64)
        gaps = np.diff(self.offsets) if nz > 1 else np.asarray([self.spacing[0]])
        # half-gap on either side of each slice
        self.gap_below = np.concatenate([[gaps[0]], gaps])
        self.gap_above = np.concatenate([gaps, [gaps[-1]]])

    def affine(self) -> np.ndarray:
        """4x4 voxel ``(z, y, x, 1)`` -> LPS mm (regular spacing)."""
        a = np.eye(4)
        a[:3, :3] = self.frame * self.spacing[None, :]
        a[:3, 3] = self.origin
        return a

    def to_mm(self, points: np.ndarray) -> np.ndarray:
        """LPS points ``(n, 3)`` -> millimetres along the (z, y, x) axes from the origin."""
        rel = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.origin[None, :]
        out: np.ndarray = rel @ self.inv_direction.T
        return out

    def slice_index(self, z_mm: float, tolerance: float) -> tuple[int, float]:
        """Nearest slice to ``z_mm`` and the distance to it in mm (``-1`` if none in tolerance).

        ``tolerance`` is a fraction of the gap to the neighbouring slice.
        """
        k = int(np.clip(np.searchsorted(self.offsets, z_mm), 0, len(self.offsets) - 1))
        if k > 0 and abs(self.offsets[k - 1] - z_mm) < abs(self.offsets[k] - z_mm):
            k -= 1
        dist = float(z_mm - self.offsets[k])
        gap = self.gap_above[k] if dist >= 0 else self.gap_below[k]
        if abs(dist) <= tolerance * gap + 1e-4:
            return k, dist
        return -1, dist


def _as_floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not numeric") from exc
    if arr.shape != (n,):
        raise InvalidInput(f"{what} must have {n} values, got {arr.size}")
    return arr


class GeometryMismatch(InvalidInput):
    """A label object that is readable but not drawn on this volume's grid."""


def _number(item: Any, keyword: str, what: str) -> int:
    """A positive integer attribute (ROI Number, Segment Number ...) or InvalidInput."""
    try:
        value = item.get(keyword)  # pydicom converts IS values on access (may raise)
        if value is None or isinstance(value, bool) or str(value).strip() == "":
            raise ValueError
        number = int(value)
        if number != float(value) or number < 1:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{what} is empty or not a positive integer") from None
    return number


def _is_multi(value: Any) -> bool:
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue | list | tuple)


def _label_dtype(max_value: int) -> type[np.unsignedinteger[Any]]:
    if max_value < 2**8:
        return np.uint8
    if max_value < 2**16:
        return np.uint16
    return np.uint32


def _read_dataset(source: Any, what: str) -> Any:
    """A pydicom Dataset from a path or a Dataset (returned as is)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, pydicom.Dataset):
        return source
    try:
        return pydicom.dcmread(str(source), force=True)
    except (OSError, InvalidDicomError, ValueError, EOFError, KeyError) as exc:
        raise InvalidInput(f"cannot read the {what} file ({type(exc).__name__})") from exc


# --------------------------------------------------------------------------------------------
# referenced series / instances


def referenced_series_uids(ds: Any) -> set[str]:
    """Series Instance UIDs a SEG or RTSTRUCT refers to (path or pydicom Dataset).

    SEG: ``ReferencedSeriesSequence`` (Common Instance Reference) and the series of
    ``StudiesContainingOtherReferencedInstancesSequence``. RTSTRUCT:
    ``ReferencedFrameOfReferenceSequence`` → ``RTReferencedStudySequence`` →
    ``RTReferencedSeriesSequence``. Other objects: their ``ReferencedSeriesSequence``, if any.
    An object that names no series gives an empty set (use :func:`referenced_instance_uids`).
    """
    ds = _read_dataset(ds, "label")
    out: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence", []):
        if item.get("SeriesInstanceUID"):
            out.add(str(item.SeriesInstanceUID))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        for item in study.get("ReferencedSeriesSequence", []):
            if item.get("SeriesInstanceUID"):
                out.add(str(item.SeriesInstanceUID))
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref_for.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if series.get("SeriesInstanceUID"):
                    out.add(str(series.SeriesInstanceUID))
    return out


def referenced_instance_uids(ds: Any) -> set[str]:
    """SOP Instance UIDs of the images a SEG or RTSTRUCT was drawn on (path or Dataset).

    SEG: ``ReferencedInstanceSequence`` items of its referenced series, and each frame's
    ``DerivationImageSequence`` → ``SourceImageSequence``. RTSTRUCT: the
    ``ContourImageSequence`` items of the referenced series and of every contour.
    """
    ds = _read_dataset(ds, "label")
    out: set[str] = set()

    def add(items: Iterable[Any]) -> None:
        for item in items:
            uid = item.get("ReferencedSOPInstanceUID")
            if uid:
                out.add(str(uid))

    for series in ds.get("ReferencedSeriesSequence", []):
        add(series.get("ReferencedInstanceSequence", []))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            add(series.get("ReferencedInstanceSequence", []))
    for frame in ds.get("PerFrameFunctionalGroupsSequence", []):
        for der in frame.get("DerivationImageSequence", []):
            add(der.get("SourceImageSequence", []))
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref_for.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                add(series.get("ContourImageSequence", []))
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            add(contour.get("ContourImageSequence", []))
    return out


# --------------------------------------------------------------------------------------------
# SEG


def _little_endian_copy(ds: Any) -> Any:
    """An explicit VR little endian copy of a big endian SEG (highdicom reads only LE)."""
    import copy

    from pydicom.pixels.utils import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian

    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InvalidInput(f"cannot decode the SEG pixel data ({type(exc).__name__})") from exc
    out = copy.deepcopy(ds)
    bits = int(ds.BitsAllocated)
    if bits == 1:
        out.PixelData = pack_bits(arr.astype(np.uint8))
        out["PixelData"].VR = "OB"
    else:
        out.PixelData = np.ascontiguousarray(arr, dtype=f"<u{bits // 8}").tobytes()
        out["PixelData"].VR = "OB" if bits == 8 else "OW"
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return out


def _load_seg(source: Any) -> Any:
    import highdicom as hd

    ds = _read_dataset(source, "SEG")
    if str(ds.get("SOPClassUID", "")) not in _SEG_SOP_CLASSES:
        raise InvalidInput("the object is not a DICOM Segmentation (wrong SOP class)")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    for j, item in enumerate(ds.get("SegmentSequence") or [], start=1):
        _number(item, "SegmentNumber", f"SEG segment {j}: Segment Number")
    for j, frame in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or [], start=1):
        for ident in frame.get("SegmentIdentificationSequence") or []:
            where = f"SEG frame {j}: Referenced Segment Number"
            _number(ident, "ReferencedSegmentNumber", where)
    if ts is not None and not ts.is_little_endian:
        ds = _little_endian_copy(ds)
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom raises many types (even sqlite3's) on malformed SEGs
        raise InvalidInput(
            f"the DICOM SEG cannot be parsed ({type(exc).__name__}); it may be malformed"
        ) from exc


def _functional_item(seg: Any, frame_item: Any | None, seq: str) -> Any | None:
    """The first item of functional group ``seq``, per-frame first, then shared."""
    if frame_item is not None and seq in frame_item:
        items = frame_item.get(seq)
        if items:
            return items[0]
    shared = seg.get("SharedFunctionalGroupsSequence")
    if shared and seq in shared[0]:
        items = shared[0].get(seq)
        if items:
            return items[0]
    return None


def _seg_segment_meta(
    seg: Any,
) -> tuple[dict[int, str], dict[int, dict[str, str]], dict[int, tuple[int, int, int, int]]]:
    import highdicom as hd

    names: dict[int, str] = {}
    codes: dict[int, dict[str, str]] = {}
    colors: dict[int, tuple[int, int, int, int]] = {}
    for item in seg.get("SegmentSequence", []):
        n = _number(item, "SegmentNumber", "SEG Segment Number")
        names[n] = str(item.get("SegmentLabel", "") or f"segment {n}")
        prop = item.get("SegmentedPropertyTypeCodeSequence")
        if prop:
            code = prop[0]
            value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue")
            codes[n] = {
                "scheme": str(code.get("CodingSchemeDesignator", "")),
                "value": str(value or ""),
                "meaning": str(code.get("CodeMeaning", "")),
            }
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None and len(lab) == 3:
            try:
                r, g, b = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb()
                colors[n] = (int(r), int(g), int(b), 255)
            except (ValueError, TypeError):
                pass
    return names, codes, colors


def seg_to_labels(
    seg: str | Path | Any,
    volume: Volume,
    *,
    slice_tolerance: float = 0.1,
    inplane_tolerance: float = 0.1,
) -> LabelVolume:
    """A DICOM SEG (path or pydicom Dataset) as a label map on ``volume``'s voxel grid.

    Each segment becomes the label value of its segment number; where segments overlap the
    higher segment number wins. Names come from ``SegmentLabel``, codes from the segmented
    property type, colours from ``RecommendedDisplayCIELabValue``. Big endian SEGs are
    converted to little endian first (highdicom reads only little endian).

    ``slice_tolerance`` is the largest distance of a frame from its slice as a fraction of the
    slice gap, ``inplane_tolerance`` the largest in-plane offset in pixels.

    Raises:
        InvalidInput: not a readable SEG, another frame of reference, or frames that are not
            on the volume's grid (orientation, rows/columns, pixel spacing, positions).
    """
    grid = _Grid(volume)
    hseg = _load_seg(seg)
    _, ny, nx = grid.shape

    seg_for = hseg.get("FrameOfReferenceUID")
    if seg_for and volume.frame_of_reference_uid and str(seg_for) != volume.frame_of_reference_uid:
        raise InvalidInput(
            "SEG geometry does not match the image: it uses another frame of reference"
        )
    rows, cols = int(hseg.Rows), int(hseg.Columns)
    if (rows, cols) != (ny, nx):
        raise InvalidInput(
            f"SEG geometry does not match the image: frames are {rows}x{cols} pixels, "
            f"the image slices {ny}x{nx}"
        )
    seg_type = str(hseg.segmentation_type.value)
    max_label = max([0, *(int(n) for n in hseg.segment_numbers)])
    mask = np.zeros(grid.shape, dtype=_label_dtype(max_label))
    max_fractional = float(hseg.get("MaximumFractionalValue", 1) or 1)

    frame_index = {(str(uid), int(frame)): k for k, (uid, frame) in enumerate(volume.frames or [])}
    per_frame = list(hseg.get("PerFrameFunctionalGroupsSequence", []))
    n_frames = int(hseg.number_of_frames)
    if per_frame and len(per_frame) < n_frames:
        raise InvalidInput("the SEG has fewer per-frame functional groups than frames")

    placements: list[tuple[int, int, int]] = []  # (segment number, frame number, slice)
    for i in range(n_frames):
        item = per_frame[i] if per_frame else None
        seg_number = 0
        ident = _functional_item(hseg, item, "SegmentIdentificationSequence")
        if ident is not None:
            seg_number = _number(
                ident,
                "ReferencedSegmentNumber",
                f"SEG frame {i + 1}: Referenced Segment Number",
            )
        elif seg_type != "LABELMAP":
            raise InvalidInput(f"SEG frame {i + 1} names no segment")
        k = _seg_frame_slice(hseg, item, i, grid, frame_index, slice_tolerance, inplane_tolerance)
        placements.append((seg_number, i + 1, k))

    # later segments win: paint in ascending segment number, frames in file order
    for seg_number, frame_number, k in sorted(placements, key=lambda p: (p[0], p[1])):
        try:
            frame = np.asarray(hseg.get_stored_frame(frame_number))
        except Exception as exc:  # highdicom/pydicom decoders raise many types
            raise InvalidInput(
                f"SEG frame {frame_number} cannot be decoded ({type(exc).__name__}): the pixel "
                "data is truncated or damaged"
            ) from exc
        if frame.shape != (ny, nx):
            raise InvalidInput("SEG frame shape does not match its Rows/Columns")
        if seg_type == "LABELMAP":
            on = frame > 0
            mask[k][on] = frame[on]
            continue
        on = frame >= max_fractional / 2.0 if seg_type == "FRACTIONAL" else frame > 0
        mask[k][on] = seg_number

    names, codes, colors = _seg_segment_meta(hseg)
    return LabelVolume(
        mask=mask,
        names=names,
        source="SEG",
        codes=codes,
        colors=colors,
        source_uid=str(hseg.get("SOPInstanceUID", "")) or None,
    )


def _seg_frame_slice(
    seg: Any,
    item: Any | None,
    i: int,
    grid: _Grid,
    frame_index: dict[tuple[str, int], int],
    slice_tolerance: float,
    inplane_tolerance: float,
) -> int:
    """The volume slice SEG frame ``i`` (0-based) lies on, checking the frame's geometry."""
    position = _functional_item(seg, item, "PlanePositionSequence")
    orientation = _functional_item(seg, item, "PlaneOrientationSequence")
    measures = _functional_item(seg, item, "PixelMeasuresSequence")
    where = f"SEG frame {i + 1}"
    if measures is not None and "PixelSpacing" in measures:
        ps = _as_floats(measures.PixelSpacing, 2, f"{where} pixel spacing")
        want = grid.spacing[1:]
        if np.any(np.abs(ps - want) > 1e-3 * want + 1e-4):
            raise InvalidInput(
                f"SEG geometry does not match the image: pixel spacing {ps[0]:g}x{ps[1]:g} mm, "
                f"the image's {want[0]:g}x{want[1]:g} mm"
            )
    if orientation is not None and "ImageOrientationPatient" in orientation:
        iop = _as_floats(orientation.ImageOrientationPatient, 6, f"{where} orientation")
        dev = max(
            float(np.max(np.abs(iop[:3] - grid.direction[:, 2]))),
            float(np.max(np.abs(iop[3:] - grid.direction[:, 1]))),
        )
        if dev > 1e-3:
            raise InvalidInput(
                "SEG geometry does not match the image: its planes have another orientation "
                f"(direction cosines differ by up to {dev:.3g})"
            )
    if position is not None and "ImagePositionPatient" in position:
        ipp = _as_floats(position.ImagePositionPatient, 3, f"{where} position")
        zyx = grid.to_mm(ipp[None, :])[0]
        off = zyx[1:] / grid.spacing[1:]
        if np.any(np.abs(off) > inplane_tolerance):
            shift = float(np.hypot(zyx[1], zyx[2]))
            raise InvalidInput(
                f"SEG geometry does not match the image: {where} is shifted in-plane by "
                f"{shift:.3g} mm from the image's grid"
            )
        k, dist = grid.slice_index(float(zyx[0]), slice_tolerance)
        if k < 0:
            raise InvalidInput(
                f"SEG geometry does not match the image: {where} lies {abs(dist):.3g} mm from "
                "the nearest image slice (not on the image's slice grid, or outside it)"
            )
        return k
    # no plane position: the image it was derived from
    for der in (item or {}).get("DerivationImageSequence", []):
        for src in der.get("SourceImageSequence", []):
            uid = str(src.get("ReferencedSOPInstanceUID", ""))
            raw = src.get("ReferencedFrameNumber")
            frames = [1] if raw in (None, "") else (list(raw) if _is_multi(raw) else [raw])
            for f in frames:
                hit = frame_index.get((uid, int(f)))
                if hit is not None:
                    return hit
    raise InvalidInput(
        f"SEG geometry does not match the image: {where} has no plane position and its source "
        "image is not a slice of this volume"
    )


# --------------------------------------------------------------------------------------------
# RTSTRUCT


def rtstruct_to_labels(
    rtstruct: str | Path | Any,
    volume: Volume,
    *,
    slice_tolerance: float = 0.5,
) -> LabelVolume:
    """An RTSTRUCT (path or pydicom Dataset) rasterised onto ``volume``'s voxel grid.

    ROIs with ``CLOSED_PLANAR`` contours become label values ``1..n`` in ascending ROI number
    order (names from ``ROIName``, colours from ``ROIDisplayColor``, codes from the
    observation's ``RTROIIdentificationCodeSequence`` when present). Later ROIs win where ROIs
    overlap. Voxels whose centre lies inside a contour are set; contours of one ROI on one slice
    combine with the even-odd rule. ``slice_tolerance`` is the largest distance of a contour
    from its slice, as a fraction of the slice gap.

    Raises:
        InvalidInput: not an RTSTRUCT, an ROI in another frame of reference, a contour that is
            not in a slice plane of the volume or lies outside it.
    """

    grid = _Grid(volume)
    ds = _read_dataset(rtstruct, "RTSTRUCT")
    if str(ds.get("SOPClassUID", "")) != _RTSTRUCT_SOP_CLASS and ds.get("Modality") != "RTSTRUCT":
        raise InvalidInput("the object is not an RT Structure Set")
    _, ny, nx = grid.shape
    vol_for = volume.frame_of_reference_uid
    volume_sops = {str(uid) for uid, _ in (volume.frames or [])}

    rois: dict[int, Any] = {}
    for j, item in enumerate(ds.get("StructureSetROISequence") or [], start=1):
        rois[_number(item, "ROINumber", f"RTSTRUCT Structure Set ROI item {j}: ROI Number")] = item
    contours_by_roi: dict[int, list[Any]] = {}
    colors_by_roi: dict[int, tuple[int, int, int, int]] = {}
    for j, item in enumerate(ds.get("ROIContourSequence") or [], start=1):
        n = _number(
            item, "ReferencedROINumber", f"RTSTRUCT ROI Contour item {j}: Referenced ROI Number"
        )
        closed = [
            c
            for c in item.get("ContourSequence", [])
            if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"
        ]
        if closed:
            contours_by_roi.setdefault(n, []).extend(closed)
        color = item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            colors_by_roi[n] = (int(color[0]), int(color[1]), int(color[2]), 255)
    codes_by_roi: dict[int, dict[str, str]] = {}
    for j, obs in enumerate(ds.get("RTROIObservationsSequence") or [], start=1):
        ident = obs.get("RTROIIdentificationCodeSequence")
        if ident and "ReferencedROINumber" in obs:
            code = ident[0]
            where = f"RTSTRUCT RT ROI Observations item {j}: Referenced ROI Number"
            codes_by_roi[_number(obs, "ReferencedROINumber", where)] = {
                "scheme": str(code.get("CodingSchemeDesignator", "")),
                "value": str(code.get("CodeValue") or code.get("LongCodeValue") or ""),
                "meaning": str(code.get("CodeMeaning", "")),
            }

    numbers = sorted(contours_by_roi)
    for n in numbers:
        roi_for = rois[n].get("ReferencedFrameOfReferenceUID") if n in rois else None
        if roi_for and vol_for and str(roi_for) != vol_for:
            raise InvalidInput(
                f"RTSTRUCT ROI {n} does not match the image: it uses another frame of reference"
            )
    mask = np.zeros(grid.shape, dtype=_label_dtype(len(numbers)))
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int, int]] = {}
    codes: dict[int, dict[str, str]] = {}
    for value, n in enumerate(numbers, start=1):
        roi = rois.get(n)
        names[value] = str(roi.get("ROIName", "") if roi is not None else "") or f"ROI {n}"
        if n in colors_by_roi:
            colors[value] = colors_by_roi[n]
        if n in codes_by_roi:
            codes[value] = codes_by_roi[n]
        roi_mask = np.zeros(grid.shape, dtype=bool)
        for j, contour in enumerate(contours_by_roi[n]):
            refs = {
                str(r.get("ReferencedSOPInstanceUID", ""))
                for r in contour.get("ContourImageSequence", [])
            }
            refs.discard("")
            if refs and volume_sops and not refs & volume_sops:
                continue  # drawn on another image series of this frame of reference
            where = f"RTSTRUCT ROI {n} contour {j + 1}"
            flat = _contour_values(contour)
            if flat is None or flat.size < 9 or flat.size % 3:
                continue  # fewer than three points: no area
            pts = flat.reshape(-1, 3)
            zyx = grid.to_mm(pts)
            z_mean = float(zyx[:, 0].mean())
            k, dist = grid.slice_index(z_mean, slice_tolerance)
            if k < 0:
                raise InvalidInput(
                    f"RTSTRUCT geometry does not match the image: {where} lies "
                    f"{abs(dist):.3g} mm from the nearest image slice (between slices or "
                    "outside the image)"
                )
            gap = min(grid.gap_below[k], grid.gap_above[k])
            if float(np.ptp(zyx[:, 0])) > slice_tolerance * gap + 1e-3:
                raise InvalidInput(
                    f"RTSTRUCT geometry does not match the image: {where} is not parallel to "
                    "the image slices"
                )
            rr, cc = fill_polygon(
                zyx[:, 1] / grid.spacing[1], zyx[:, 2] / grid.spacing[2], (ny, nx)
            )
            plane = roi_mask[k]
            plane[rr, cc] = ~plane[rr, cc]
        mask[roi_mask] = value
    return LabelVolume(
        mask=mask,
        names=names,
        source="RTSTRUCT",
        codes=codes,
        colors=colors,
        source_uid=str(ds.get("SOPInstanceUID", "")) or None,
    )


def _contour_values(contour: Any) -> np.ndarray | None:
    """ContourData as float64, parsed straight from the raw bytes when pydicom has not yet
    converted them (pydicom builds one Python object per decimal string otherwise)."""
    if "ContourData" not in contour:
        return None
    raw = contour.get_item("ContourData")
    value = getattr(raw, "value", None)
    if isinstance(value, bytes | bytearray):
        text = bytes(value).strip(b" \x00")
        if not text:
            return None
        try:
            return np.array(text.split(b"\\"), dtype=np.float64)
        except ValueError:
            pass  # unusual formatting: let pydicom parse it
    data = contour.ContourData
    return np.asarray([float(v) for v in data], dtype=np.float64) if data else None


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


# --------------------------------------------------------------------------------------------
# NIfTI


def nifti_to_labels(
    path: str | Path,
    volume: Volume,
    names: dict[int, str] | None = None,
    *,
    tolerance_mm: float | None = None,
) -> LabelVolume:
    """A NIfTI label image on ``volume``'s voxel grid.

    The NIfTI affine (RAS+, voxel ``(i, j, k)``) is converted to LPS+ with
    ``diag(-1, -1, 1, 1) @ affine`` and compared with the volume's. The usual layout is
    ``(i, j, k) = (x, y, z)`` of the volume; any permutation or flip of the axes that maps the
    same voxel centres is undone. ``tolerance_mm`` (default: a tenth of the smallest voxel
    spacing) bounds the distance between corresponding voxel centres at the volume's corners.
    Values must be non-negative integers; ``names`` (default ``"label <v>"``) names them.

    Raises:
        GeometryMismatch: "label geometry does not match the image", with the largest
            deviation in mm (a mask of another image).
        InvalidInput: unreadable, truncated or damaged file, non-integer or negative values.
    """
    import nibabel as nib

    grid = _Grid(volume)
    try:
        img: Any = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InvalidInput(f"cannot read the NIfTI file ({type(exc).__name__})") from exc
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InvalidInput(f"a NIfTI label image must be 3D, got shape {img.shape}")
    tol = float(tolerance_mm) if tolerance_mm is not None else 0.1 * float(grid.spacing.min())

    nifti_lps = _RAS_FROM_LPS @ np.asarray(img.affine, dtype=np.float64)
    vol_affine = grid.affine()
    # volume voxel (z, y, x, 1) -> nifti voxel (i, j, k, 1)
    try:
        m = np.linalg.solve(nifti_lps, vol_affine)
    except np.linalg.LinAlgError as exc:
        raise InvalidInput("the NIfTI affine is singular") from exc
    perm = np.argmax(np.abs(m[:3, :3]), axis=0)  # nifti axis of each volume axis
    nz, ny, nx = grid.shape
    corners = np.array(
        [[z, y, x] for z in (0, nz - 1) for y in (0, ny - 1) for x in (0, nx - 1)], dtype=float
    )
    vol_pts = corners @ vol_affine[:3, :3].T + vol_affine[:3, 3]
    if sorted(perm.tolist()) != [0, 1, 2]:
        dev = float(np.max(np.abs(vol_pts - vol_pts.mean(0))))
        raise GeometryMismatch(
            "label geometry does not match the image: the NIfTI axes are not aligned with the "
            f"image's (max deviation {dev:.3g} mm)"
        )
    signs = np.sign(m[perm, [0, 1, 2]])
    p = np.zeros((3, 3))
    p[perm, [0, 1, 2]] = signs
    # the volume's first voxel must be the NIfTI's first voxel along each axis (or its last,
    # where the axis is flipped): the deviation is then the real misplacement in mm
    t = np.zeros(3)
    for a, ax in enumerate(perm):
        if signs[a] < 0:
            t[int(ax)] = shape[int(ax)] - 1
    nifti_idx = corners @ p.T + t
    mapped = nifti_idx @ nifti_lps[:3, :3].T + nifti_lps[:3, 3]
    dev = float(np.max(np.linalg.norm(mapped - vol_pts, axis=1)))
    vol_shape_in_nifti = [0, 0, 0]
    for a, ax in enumerate(perm):
        vol_shape_in_nifti[int(ax)] = grid.shape[a]
    if dev > tol or tuple(vol_shape_in_nifti) != shape:
        raise GeometryMismatch(
            "label geometry does not match the image: NIfTI shape "
            f"{'x'.join(map(str, shape))} vs image {nz}x{ny}x{nx} (z,y,x), "
            f"max deviation {dev:.3g} mm (tolerance {tol:.3g} mm)"
        )

    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:  # truncated or damaged data: nibabel/gzip/zlib raise many types
        raise InvalidInput(
            f"cannot read the NIfTI label data ({type(exc).__name__}): the file is truncated "
            "or damaged"
        ) from exc
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)):
            raise InvalidInput("a NIfTI label image must hold integer values")
    elif data.dtype.kind not in "iub":
        raise InvalidInput(f"a NIfTI label image must hold integers, got {data.dtype}")
    if data.size and data.min() < 0:
        raise InvalidInput("a NIfTI label image must not hold negative values")
    max_value = int(data.max()) if data.size else 0
    # reorder nifti axes to volume axes, then flip where needed
    arr = np.transpose(data, axes=[int(a) for a in perm])
    flips = tuple(a for a in range(3) if signs[a] < 0)
    if flips:
        arr = np.flip(arr, axis=flips)
    mask = np.ascontiguousarray(arr, dtype=_label_dtype(max_value))
    present = [int(v) for v in np.unique(mask) if v != 0]
    label_names = dict(names) if names is not None else {v: f"label {v}" for v in present}
    return LabelVolume(mask=mask, names=label_names, source="NIFTI")
