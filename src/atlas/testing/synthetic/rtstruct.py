"""The synthetic RTSTRUCT: closed planar contours of each label on every slice it crosses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.testing.synthetic.ct import _CT_IMAGE_STORAGE
from atlas.testing.synthetic.identity import (
    _add_private_block,
    _file_meta,
    _fill_patient_study,
    _Identity,
)
from atlas.testing.synthetic.model import LABEL_RGB

_RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed marching-squares contours ``(n, 2)`` in (row, column) pixel units."""
    from skimage import measure

    padded = np.pad(mask, 1).astype(np.float32)
    out = []
    for c in measure.find_contours(padded, 0.5):
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c - 1.0)
    return out


def _write_rtstruct(
    path: Path,
    *,
    ident: _Identity,
    uids: dict[str, str],
    headers: list[Any],
    truth: np.ndarray,
    origin: np.ndarray,
    direction: np.ndarray,
    spacing: tuple[float, float, float],
) -> None:
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    v, d, t = ident.values, ident.dates, ident.times
    ds = Dataset()
    _fill_patient_study(ds, ident, uids["study"])
    ds.SOPClassUID = _RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = uids["rt_sop"]
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "Atlas Synthetic"
    ds.SeriesInstanceUID = uids["rt_series"]
    ds.SeriesNumber = "4"
    ds.SeriesDate = d["StudyDate"]
    ds.SeriesTime = t["SeriesTime"]
    ds.SeriesDescription = v["RTSeriesDescription"]
    ds.OperatorsName = v["OperatorsName"]
    ds.InstanceNumber = "1"
    ds.FrameOfReferenceUID = uids["for"]
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = v["StructureSetLabel"]
    ds.StructureSetName = v["StructureSetName"]
    ds.StructureSetDate = d["StudyDate"]
    ds.StructureSetTime = t["ContentTime"]

    contour_images = []
    for h in headers:
        item = Dataset()
        item.ReferencedSOPClassUID = _CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = h.SOPInstanceUID
        contour_images.append(item)
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = uids["series"]
    rt_series.ContourImageSequence = contour_images
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    rt_study.ReferencedSOPInstanceUID = uids["study"]
    rt_study.RTReferencedSeriesSequence = [rt_series]
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = uids["for"]
    ref_for.RTReferencedStudySequence = [rt_study]
    ds.ReferencedFrameOfReferenceSequence = [ref_for]

    # liver includes its tumours (as a clinician would draw it); tumour is drawn on top
    rois = [(1, "liver", "ORGAN", {1, 2}), (2, "liver tumour", "GTV", {2})]
    row_dir, col_dir = direction[:, 2] * spacing[2], direction[:, 1] * spacing[1]
    ss_rois, roi_contours, observations = [], [], []
    for number, name, kind, values in rois:
        ss = Dataset()
        ss.ROINumber = str(number)
        ss.ReferencedFrameOfReferenceUID = uids["for"]
        ss.ROIName = name
        ss.ROIGenerationAlgorithm = "MANUAL"
        ss_rois.append(ss)
        obs = Dataset()
        obs.ObservationNumber = str(number)
        obs.ReferencedROINumber = str(number)
        obs.RTROIInterpretedType = kind
        obs.ROIInterpreter = v["ROIInterpreter"]
        observations.append(obs)
        rc = Dataset()
        rc.ReferencedROINumber = str(number)
        rc.ROIDisplayColor = [str(c) for c in LABEL_RGB[number]]
        seq: list[Any] = []
        lut = np.zeros(256, dtype=bool)
        lut[list(values)] = True
        for k, h in enumerate(headers):
            mask = lut[truth[k]]
            if not mask.any():
                continue
            ipp = origin + direction[:, 0] * (spacing[0] * k)
            for c in _contours(mask):
                pts = ipp[None, :] + c[:, 1:2] * row_dir[None, :] + c[:, 0:1] * col_dir[None, :]
                item = Dataset()
                ref = Dataset()
                ref.ReferencedSOPClassUID = _CT_IMAGE_STORAGE
                ref.ReferencedSOPInstanceUID = h.SOPInstanceUID
                item.ContourImageSequence = [ref]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = str(len(pts))
                item.ContourNumber = str(len(seq) + 1)
                item.ContourData = "\\".join(f"{x:.4f}" for x in pts.ravel())
                seq.append(item)
        rc.ContourSequence = seq
        roi_contours.append(rc)
    ds.StructureSetROISequence = ss_rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    _add_private_block(ds, ident)
    ds.file_meta = _file_meta(_RT_STRUCTURE_SET_STORAGE, uids["rt_sop"], ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
