"""DICOM SEG onto the voxel grid of an image volume.

Each frame's *Image Position (Patient)* is matched to a slice of the volume; the frame must
lie on the volume's grid (same orientation, rows, columns and pixel spacing). Frames without a
plane position are matched through the source image they were derived from. Label value =
segment number; where segments overlap the later (higher-numbered) segment wins; FRACTIONAL
segments are thresholded at half their maximum value. Functional groups are read through
:func:`atlas.dicom.functional_groups.functional_group_items` (the frame's item overrides the
shared one; a frame without its own reads the shared one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.dicom.functional_groups import PER_FRAME, functional_group_item, functional_group_items
from atlas.errors import InvalidInput
from atlas.ingest.labels.grid import (
    Grid,
    as_floats,
    is_multi,
    label_dtype,
    positive_number,
    read_label_dataset,
)
from atlas.ingest.model import LabelVolume, Volume

__all__ = ["seg_to_labels"]

_SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
}


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

    ds = read_label_dataset(source, "SEG")
    if str(ds.get("SOPClassUID", "")) not in _SEG_SOP_CLASSES:
        raise InvalidInput("the object is not a DICOM Segmentation (wrong SOP class)")
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    for j, item in enumerate(ds.get("SegmentSequence") or [], start=1):
        positive_number(item, "SegmentNumber", f"SEG segment {j}: Segment Number")
    for j in range(max(len(ds.get(PER_FRAME) or []), 1)):
        for ident in functional_group_items(ds, "SegmentIdentificationSequence", j):
            where = f"SEG frame {j + 1}: Referenced Segment Number"
            positive_number(ident, "ReferencedSegmentNumber", where)
    if ts is not None and not ts.is_little_endian:
        ds = _little_endian_copy(ds)
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom raises many types (even sqlite3's) on malformed SEGs
        raise InvalidInput(
            f"the DICOM SEG cannot be parsed ({type(exc).__name__}); it may be malformed"
        ) from exc


def _seg_segment_meta(
    seg: Any,
) -> tuple[dict[int, str], dict[int, dict[str, str]], dict[int, tuple[int, int, int, int]]]:
    import highdicom as hd

    names: dict[int, str] = {}
    codes: dict[int, dict[str, str]] = {}
    colors: dict[int, tuple[int, int, int, int]] = {}
    for item in seg.get("SegmentSequence", []):
        n = positive_number(item, "SegmentNumber", "SEG Segment Number")
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

    Raises
    ------
        InvalidInput: not a readable SEG, another frame of reference, or frames that are not
            on the volume's grid (orientation, rows/columns, pixel spacing, positions).
    """
    grid = Grid(volume)
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
    mask = np.zeros(grid.shape, dtype=label_dtype(max_label))
    max_fractional = float(hseg.get("MaximumFractionalValue", 1) or 1)

    frame_index = {(str(uid), int(frame)): k for k, (uid, frame) in enumerate(volume.frames or [])}
    per_frame = list(hseg.get(PER_FRAME, []))
    n_frames = int(hseg.number_of_frames)
    if per_frame and len(per_frame) < n_frames:
        raise InvalidInput("the SEG has fewer per-frame functional groups than frames")

    placements: list[tuple[int, int, int]] = []  # (segment number, frame number, slice)
    for i in range(n_frames):
        seg_number = 0
        ident = functional_group_item(hseg, "SegmentIdentificationSequence", i)
        if ident is not None:
            seg_number = positive_number(
                ident,
                "ReferencedSegmentNumber",
                f"SEG frame {i + 1}: Referenced Segment Number",
            )
        elif seg_type != "LABELMAP":
            raise InvalidInput(f"SEG frame {i + 1} names no segment")
        k = _seg_frame_slice(hseg, i, grid, frame_index, slice_tolerance, inplane_tolerance)
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
    i: int,
    grid: Grid,
    frame_index: dict[tuple[str, int], int],
    slice_tolerance: float,
    inplane_tolerance: float,
) -> int:
    """The volume slice SEG frame ``i`` (0-based) lies on, checking the frame's geometry."""
    position = functional_group_item(seg, "PlanePositionSequence", i)
    orientation = functional_group_item(seg, "PlaneOrientationSequence", i)
    measures = functional_group_item(seg, "PixelMeasuresSequence", i)
    where = f"SEG frame {i + 1}"
    if measures is not None and "PixelSpacing" in measures:
        ps = as_floats(measures.PixelSpacing, 2, f"{where} pixel spacing")
        want = grid.spacing[1:]
        if np.any(np.abs(ps - want) > 1e-3 * want + 1e-4):
            raise InvalidInput(
                f"SEG geometry does not match the image: pixel spacing {ps[0]:g}x{ps[1]:g} mm, "
                f"the image's {want[0]:g}x{want[1]:g} mm"
            )
    if orientation is not None and "ImageOrientationPatient" in orientation:
        iop = as_floats(orientation.ImageOrientationPatient, 6, f"{where} orientation")
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
        ipp = as_floats(position.ImagePositionPatient, 3, f"{where} position")
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
    for der in functional_group_items(seg, "DerivationImageSequence", i):
        for src in der.get("SourceImageSequence", []):
            uid = str(src.get("ReferencedSOPInstanceUID", ""))
            raw = src.get("ReferencedFrameNumber")
            frames = [1] if raw in (None, "") else (list(raw) if is_multi(raw) else [raw])
            for f in frames:
                hit = frame_index.get((uid, int(f)))
                if hit is not None:
                    return hit
    raise InvalidInput(
        f"SEG geometry does not match the image: {where} has no plane position and its source "
        "image is not a slice of this volume"
    )
