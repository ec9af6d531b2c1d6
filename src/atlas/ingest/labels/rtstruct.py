"""RTSTRUCT contours rasterised onto the voxel grid of an image volume.

``CLOSED_PLANAR`` contours are mapped into voxel coordinates with the inverse of the volume's
affine (so oblique images work), assigned to the slice within half a slice gap, and filled
with the even-odd rule (:mod:`atlas.ingest.labels.polygon`; contours of one ROI on one slice
are XOR-ed, so inner contours make holes). Label values are ``1..n`` in ascending ROI number
order over the ROIs that have closed planar contours; later ROIs win where they overlap.
Contours that reference images outside this volume are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.ingest.labels.grid import Grid, label_dtype, positive_number, read_label_dataset
from atlas.ingest.labels.polygon import fill_polygon
from atlas.ingest.model import LabelVolume, Volume

__all__ = ["rtstruct_to_labels"]

_RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


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

    Raises
    ------
        InvalidInput: not an RTSTRUCT, an ROI in another frame of reference, a contour that is
            not in a slice plane of the volume or lies outside it.
    """
    grid = Grid(volume)
    ds = read_label_dataset(rtstruct, "RTSTRUCT")
    if str(ds.get("SOPClassUID", "")) != _RTSTRUCT_SOP_CLASS and ds.get("Modality") != "RTSTRUCT":
        raise InvalidInput("the object is not an RT Structure Set")
    _, ny, nx = grid.shape
    vol_for = volume.frame_of_reference_uid
    volume_sops = {str(uid) for uid, _ in (volume.frames or [])}

    rois: dict[int, Any] = {}
    for j, item in enumerate(ds.get("StructureSetROISequence") or [], start=1):
        where = f"RTSTRUCT Structure Set ROI item {j}: ROI Number"
        rois[positive_number(item, "ROINumber", where)] = item
    contours_by_roi: dict[int, list[Any]] = {}
    colors_by_roi: dict[int, tuple[int, int, int, int]] = {}
    for j, item in enumerate(ds.get("ROIContourSequence") or [], start=1):
        n = positive_number(
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
            codes_by_roi[positive_number(obs, "ReferencedROINumber", where)] = {
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
    mask = np.zeros(grid.shape, dtype=label_dtype(len(numbers)))
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
    """ContourData as float64.

    Parsed straight from the raw bytes when pydicom has not yet converted them (pydicom builds
    one Python object per decimal string otherwise).
    """
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
