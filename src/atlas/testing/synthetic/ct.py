"""The synthetic CT series: transfer syntaxes, geometry, headers and slice files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.testing.synthetic.identity import (
    _add_private_block,
    _ds_num,
    _file_meta,
    _fill_patient_study,
    _Identity,
)

__all__ = ["supported_transfer_syntaxes"]

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def supported_transfer_syntaxes() -> list[str]:
    """Transfer syntax UIDs :func:`make_study` can write here (lossless only).

    Uncompressed little endian (explicit, implicit, deflated) always; RLE Lossless, JPEG-LS
    Lossless and JPEG 2000 Lossless when pydicom has an encoder for them installed.
    """
    import pydicom.uid as U
    from pydicom.pixels import get_encoder

    out = [U.ExplicitVRLittleEndian, U.ImplicitVRLittleEndian, U.DeflatedExplicitVRLittleEndian]
    for uid in (U.RLELossless, U.JPEGLSLossless, U.JPEG2000Lossless):
        try:
            if get_encoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:
            pass
    return [str(u) for u in out]


def _check_transfer_syntax(ts: str) -> tuple[str, str]:
    """Validate ``ts``; return it and the encoding plugin to use (``""`` = uncompressed)."""
    import pydicom.uid as U
    from pydicom.pixels import get_encoder

    uid = U.UID(str(ts))
    if uid in (U.ExplicitVRLittleEndian, U.ImplicitVRLittleEndian):
        return str(uid), ""
    if uid == U.DeflatedExplicitVRLittleEndian:
        return str(uid), ""
    if uid not in (U.RLELossless, U.JPEGLSLossless, U.JPEG2000Lossless):
        raise InvalidInput(
            f"transfer syntax {uid} ({uid.name or 'unknown'}) is not supported by the synthetic "
            "study generator: use an uncompressed little endian syntax or a lossless one "
            "(RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless) so HU values round-trip"
        )
    try:
        encoder = get_encoder(uid)
    except NotImplementedError as exc:  # pragma: no cover - pydicom has encoders for all three
        raise InvalidInput(f"pydicom has no encoder for {uid.name}") from exc
    if not encoder.is_available:
        raise InvalidInput(
            f"pydicom cannot encode {uid.name} here: install one of its encoder plugins "
            f"(missing: {encoder.missing_dependencies})"
        )
    plugins = list(encoder.available_plugins)
    # pylibjpeg's RLE encoder is far faster than pydicom's pure-Python one
    plugin = "pylibjpeg" if "pylibjpeg" in plugins else plugins[0]
    return str(uid), plugin


# --------------------------------------------------------------------------------------------
# geometry


def _rotation(oblique: bool) -> np.ndarray:
    """Columns: row direction (x), column direction (y), slice normal (z), all LPS."""
    if not oblique:
        return np.eye(3)
    a, b, c = np.deg2rad([17.0, 11.0, -8.0])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return np.asarray(rz @ rx @ ry, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# writers


def _ct_header(
    *,
    ident: _Identity,
    uids: dict[str, str],
    sop_uid: str,
    instance_number: int,
    ipp: np.ndarray,
    iop: list[str],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    normal: np.ndarray,
    signed: bool,
) -> Any:
    from pydicom.dataset import Dataset

    v, d, t = ident.values, ident.dates, ident.times
    ds = Dataset()
    _fill_patient_study(ds, ident, uids["study"])
    ds.SOPClassUID = _CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.Manufacturer = "Atlas Synthetic"
    ds.ManufacturerModelName = "Phantom CT"
    ds.SoftwareVersions = "1"
    ds.SeriesInstanceUID = uids["series"]
    ds.SeriesNumber = "2"
    ds.SeriesDate = d["StudyDate"]
    ds.SeriesTime = t["SeriesTime"]
    ds.SeriesDescription = v["SeriesDescription"]
    ds.ProtocolName = v["ProtocolName"]
    ds.PerformingPhysicianName = v["PerformingPhysicianName"]
    ds.OperatorsName = v["OperatorsName"]
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.PerformedProcedureStepID = v["PerformedProcedureStepID"]
    ds.PerformedProcedureStepStartDate = d["StudyDate"]
    ds.PerformedProcedureStepStartTime = t["StudyTime"]
    ds.PerformedProcedureStepDescription = v["PerformedProcedureStepDescription"]
    req = Dataset()
    req.RequestedProcedureID = v["RequestedProcedureID"]
    req.ScheduledProcedureStepID = v["ScheduledProcedureStepID"]
    req.RequestedProcedureDescription = v["RequestedProcedureDescription"]
    ds.RequestAttributesSequence = [req]
    ds.FrameOfReferenceUID = uids["for"]
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = str(instance_number)
    ds.AcquisitionNumber = "1"
    ds.AcquisitionDate = d["StudyDate"]
    ds.AcquisitionTime = t["AcquisitionTime"]
    ds.AcquisitionDateTime = d["StudyDate"] + t["AcquisitionTime"]
    ds.ContentDate = d["StudyDate"]
    ds.ContentTime = t["ContentTime"]
    ds.ImageComments = v["ImageComments"]
    ds.ImagePositionPatient = [_ds_num(float(c), 6) for c in ipp]
    ds.ImageOrientationPatient = iop
    ds.PixelSpacing = [_ds_num(spacing[1]), _ds_num(spacing[2])]
    ds.SliceThickness = _ds_num(spacing[0])
    ds.SpacingBetweenSlices = _ds_num(spacing[0])
    ds.SliceLocation = _ds_num(float(np.dot(ipp, normal)), 6)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = shape[1]
    ds.Columns = shape[2]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = 15 if signed else 11
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = "0" if signed else "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    _add_private_block(ds, ident)
    return ds


def _write_ct_slice(
    header: Any, hu: np.ndarray, path: Path, ts: str, plugin: str, signed: bool
) -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.update(header)
    stored = hu.astype(np.int16) if signed else (hu.astype(np.int32) + 1024).astype(np.uint16)
    ds.file_meta = _file_meta(_CT_IMAGE_STORAGE, header.SOPInstanceUID, ts)
    if plugin:
        ds.compress(ts, stored, encoding_plugin=plugin, generate_instance_uid=False)
    else:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
