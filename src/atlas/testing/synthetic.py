"""A seeded, reproducible synthetic DICOM study: CT series, SEG, RTSTRUCT and NIfTI mask.

:func:`make_study` writes what a site would send us for one patient, at realistic sizes, so
ingest, privacy and benchmark code can run on it without any real patient data:

- one CT series of single-frame CT Image Storage files (body phantom of
  :mod:`atlas.testing.phantom` with liver and tumour spheres), full patient-space geometry,
  optionally rotated (``oblique=True``) and compressed losslessly (``transfer_syntax``);
  instance numbers run against the slice order (head first, as scanners number them) and a few
  of them are additionally swapped, and file names follow neither order;
- a DICOM SEG (highdicom, BINARY) with segments ``liver`` and ``liver tumour`` (SNOMED CT);
- an RTSTRUCT with closed planar contours of ``liver`` (which includes the tumour) and
  ``liver tumour`` on every slice they cross;
- a NIfTI-1 mask (``.nii.gz``) on the CT's voxel grid.

Every identifying attribute a site might fill is filled with a distinctive *canary* value and
listed in :attr:`SyntheticStudy.canaries` (with the original UIDs and dates), so a privacy test
can search every byte Atlas writes for them.

Conventions (the same as :class:`atlas.ingest.model.Volume`): arrays are ``(z, y, x)`` in
*sorted-slice order* (ascending along the slice normal ``row x column``), ``origin`` is the LPS
position of voxel 0's centre, ``direction`` column ``a`` is the LPS unit vector of array axis
``a``. Label values: 1 = liver, 2 = liver tumour (the phantom's lungs are not labelled).

Generation streams to disk slab by slab; only the uint8 label map (and, with ``keep_hu``, the
int16 HU volume) is held in memory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.testing.phantom import _slab, make_phantom

__all__ = ["LABEL_NAMES", "SyntheticStudy", "make_study", "supported_transfer_syntaxes"]

#: label values of :attr:`SyntheticStudy.truth_labels`
LABEL_NAMES: dict[int, str] = {1: "liver", 2: "liver tumour"}
#: RGB display colours (SEG as CIELab, RTSTRUCT as ROIDisplayColor)
LABEL_RGB: dict[int, tuple[int, int, int]] = {1: (165, 80, 40), 2: (255, 40, 40)}

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_PRIVATE_CREATOR = "ATLAS SYNTHETIC"
_SLAB = 16


@dataclass(repr=False)
class SyntheticStudy:
    """What :func:`make_study` wrote, and the ground truth to check ingest against.

    ``ct_files`` are in sorted-slice order (``ct_files[k]`` holds slice ``k`` of
    ``truth_labels``), ``sop_instance_uids`` likewise. Geometry fields follow the
    :class:`atlas.ingest.model.Volume` convention. All UIDs and ``patient_id`` are *original*
    (identifying) values and are also in ``canaries``.
    """

    out_dir: Path
    ct_files: list[Path]
    seg_file: Path | None
    rtstruct_file: Path | None
    nifti_file: Path | None
    canaries: list[str]
    truth_labels: np.ndarray
    hu: np.ndarray | None
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)
    #: instance number of each slice (sorted-slice order)
    instance_numbers: list[int] = field(default_factory=list)
    transfer_syntax: str = "1.2.840.10008.1.2.1"
    seg_uid: str | None = None
    rtstruct_uid: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of the CT volume."""
        z, y, x = self.truth_labels.shape
        return (int(z), int(y), int(x))

    def affine(self) -> np.ndarray:
        """4x4 matrix mapping a voxel index ``(z, y, x, 1)`` to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def __repr__(self) -> str:
        return f"SyntheticStudy(shape={self.shape}, files={len(self.ct_files)})"


# --------------------------------------------------------------------------------------------
# transfer syntaxes


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
# identifiers and canaries


def _uid(seed: int, patient_id: str, role: str, index: int = 0) -> str:
    digest = hashlib.sha256(f"atlas-synthetic|{seed}|{patient_id}|{role}|{index}".encode())
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


def _ds_num(v: float, decimals: int = 6) -> str:
    """A decimal string (DS) of at most 16 characters."""
    s = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        s = f"{v:.8g}"
    return s


@dataclass
class _Identity:
    """All identifying values of the synthetic patient/study (every one a canary)."""

    token: str
    patient_id: str
    values: dict[str, str]
    dates: dict[str, str]
    times: dict[str, str]

    def canaries(self) -> list[str]:
        """Values that must never survive de-identification with Atlas's default options."""
        retained = set(self.retained())
        out = [self.patient_id, *self.values.values(), *self.dates.values(), *self.times.values()]
        return [v for v in dict.fromkeys(out) if v not in retained]

    def retained(self) -> list[str]:
        """Values PS3.15 lets the default options keep: Ethnic Group (Retain Patient
        Characteristics) and times of day (Retain Longitudinal Temporal Information with
        Modified Dates shifts the date, not the time)."""
        times = [v for k, v in self.times.items() if k != "PatientBirthTime"]
        return [self.values["EthnicGroup"], *times]


def _identity(seed: int, patient_id: str | None) -> _Identity:
    token = hashlib.sha256(f"atlas-synthetic|{seed}".encode()).hexdigest()[:4]
    pid = patient_id if patient_id is not None else f"CANARY-PID-{token}"
    rng = np.random.default_rng([seed, 7919])
    birth = _dt.date(1935, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 25000)))
    study = _dt.date(2014, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 3500)))
    created = study + _dt.timedelta(days=2)
    micro = [int(x) for x in rng.integers(100000, 999999, size=6)]
    t = token
    values = {
        # LO/PN/ST/LT values (≤ 64 chars); SH values (≤ 16 chars) use the short "CNRY" prefix
        "PatientGivenName": f"CANARY-GIVEN-{t}",
        "PatientFamilyName": f"CANARY-NAME-{t}",
        "IssuerOfPatientID": f"CANARY-ISSUER-{t}",
        "OtherPatientID": f"CANARY-OTHERPID-{t}",
        "OtherPatientName": f"CANARY-OTHERNAME-{t}",
        "PatientMotherBirthName": f"CANARY-MOTHER-{t}",
        "PatientAddress": f"CANARY-ADDRESS-{t} 12 Rue Imaginaire",
        "PatientTelephoneNumbers": f"CNRY-TEL-{t}",
        "CountryOfResidence": f"CANARY-COUNTRY-{t}",
        "RegionOfResidence": f"CANARY-REGION-{t}",
        "Occupation": f"CNRY-OCC-{t}",
        "EthnicGroup": f"CNRY-ETH-{t}",
        "MedicalRecordLocator": f"CANARY-MRL-{t}",
        "AdditionalPatientHistory": f"CANARY-HISTORY-{t}",
        "PatientComments": f"CANARY-COMMENT-{t}",
        "InstitutionName": f"CANARY-INSTITUTION-{t}",
        "InstitutionAddress": f"CANARY-INSTADDR-{t} 1 Hospital Way",
        "InstitutionalDepartmentName": f"CANARY-DEPT-{t}",
        "ReferringPhysicianName": f"CANARY-REFPHYS-{t}",
        "ReferringPhysicianAddress": f"CANARY-REFADDR-{t}",
        "ReferringPhysicianTelephoneNumbers": f"CNRY-REFTEL-{t}",
        "PerformingPhysicianName": f"CANARY-PERFPHYS-{t}",
        "NameOfPhysiciansReadingStudy": f"CANARY-READER-{t}",
        "PhysiciansOfRecord": f"CANARY-RECORDPHYS-{t}",
        "RequestingPhysician": f"CANARY-REQPHYS-{t}",
        "OperatorsName": f"CANARY-OPERATOR-{t}",
        "AccessionNumber": f"CNRY-ACC-{t}",
        "StudyID": f"CNRY-SID-{t}",
        "StationName": f"CNRY-STN-{t}",
        "DeviceSerialNumber": f"CANARY-SERIAL-{t}",
        "StudyDescription": f"CANARY-STUDYDESC-{t}",
        "SeriesDescription": f"CANARY-SERIESDESC-{t}",
        "ProtocolName": f"CANARY-PROTOCOL-{t}",
        "RequestedProcedureDescription": f"CANARY-REQPROC-{t}",
        "PerformedProcedureStepDescription": f"CANARY-PPSDESC-{t}",
        "PerformedProcedureStepID": f"CNRY-PPSID-{t}",
        "RequestedProcedureID": f"CNRY-RPID-{t}",
        "ScheduledProcedureStepID": f"CNRY-SPSID-{t}",
        "AdmittingDiagnosesDescription": f"CANARY-DIAGNOSIS-{t}",
        "ImageComments": f"CANARY-IMGCOMMENT-{t}",
        "PrivateText": f"CANARY-PRIVATE-{t}",
        "PrivateShort": f"CNRY-PRIV-{t}",
        "SegSeriesDescription": f"CANARY-SEGDESC-{t}",
        "ContentCreatorName": f"CANARY-CREATOR-{t}",
        "RTSeriesDescription": f"CANARY-RTDESC-{t}",
        "StructureSetLabel": f"CNRY-SSL-{t}",
        "StructureSetName": f"CANARY-SSNAME-{t}",
        "ROIInterpreter": f"CANARY-INTERPRETER-{t}",
    }
    dates = {
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "StudyDate": study.strftime("%Y%m%d"),
        "InstanceCreationDate": created.strftime("%Y%m%d"),
    }
    times = {
        "PatientBirthTime": f"0715{micro[0] % 60:02d}",
        "StudyTime": f"0931{micro[1] % 60:02d}.{micro[1]:06d}",
        "SeriesTime": f"0934{micro[2] % 60:02d}.{micro[2]:06d}",
        "AcquisitionTime": f"0935{micro[3] % 60:02d}.{micro[3]:06d}",
        "ContentTime": f"0936{micro[4] % 60:02d}.{micro[4]:06d}",
        "InstanceCreationTime": f"1102{micro[5] % 60:02d}.{micro[5]:06d}",
    }
    return _Identity(token=token, patient_id=pid, values=values, dates=dates, times=times)


def _fill_patient_study(ds: Any, ident: _Identity, study_uid: str) -> None:
    """Patient, general study and identifying equipment attributes (shared by all objects)."""
    from pydicom.dataset import Dataset

    v, d, t = ident.values, ident.dates, ident.times
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"{v['PatientFamilyName']}^{v['PatientGivenName']}"
    ds.PatientID = ident.patient_id
    ds.IssuerOfPatientID = v["IssuerOfPatientID"]
    ds.PatientBirthDate = d["PatientBirthDate"]
    ds.PatientBirthTime = t["PatientBirthTime"]
    ds.PatientSex = "F"
    ds.PatientAge = "047Y"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "71"
    ds.OtherPatientIDs = v["OtherPatientID"]
    ds.OtherPatientNames = v["OtherPatientName"]
    other = Dataset()
    other.PatientID = v["OtherPatientID"]
    other.IssuerOfPatientID = v["IssuerOfPatientID"]
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [other]
    ds.PatientMotherBirthName = v["PatientMotherBirthName"]
    ds.PatientAddress = v["PatientAddress"]
    ds.PatientTelephoneNumbers = v["PatientTelephoneNumbers"]
    ds.CountryOfResidence = v["CountryOfResidence"]
    ds.RegionOfResidence = v["RegionOfResidence"]
    ds.Occupation = v["Occupation"]
    ds.EthnicGroup = v["EthnicGroup"]
    ds.MedicalRecordLocator = v["MedicalRecordLocator"]
    ds.AdditionalPatientHistory = v["AdditionalPatientHistory"]
    ds.PatientComments = v["PatientComments"]
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = d["StudyDate"]
    ds.StudyTime = t["StudyTime"]
    ds.StudyID = v["StudyID"]
    ds.AccessionNumber = v["AccessionNumber"]
    ds.StudyDescription = v["StudyDescription"]
    ds.ReferringPhysicianName = v["ReferringPhysicianName"]
    ds.ReferringPhysicianAddress = v["ReferringPhysicianAddress"]
    ds.ReferringPhysicianTelephoneNumbers = v["ReferringPhysicianTelephoneNumbers"]
    ds.PhysiciansOfRecord = v["PhysiciansOfRecord"]
    ds.NameOfPhysiciansReadingStudy = v["NameOfPhysiciansReadingStudy"]
    ds.RequestingPhysician = v["RequestingPhysician"]
    ds.RequestedProcedureDescription = v["RequestedProcedureDescription"]
    ds.AdmittingDiagnosesDescription = v["AdmittingDiagnosesDescription"]
    ds.InstitutionName = v["InstitutionName"]
    ds.InstitutionAddress = v["InstitutionAddress"]
    ds.InstitutionalDepartmentName = v["InstitutionalDepartmentName"]
    ds.StationName = v["StationName"]
    ds.DeviceSerialNumber = v["DeviceSerialNumber"]
    ds.InstanceCreationDate = d["InstanceCreationDate"]
    ds.InstanceCreationTime = t["InstanceCreationTime"]


def _add_private_block(ds: Any, ident: _Identity) -> None:
    block = ds.private_block(0x0009, _PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", ident.values["PrivateText"])
    block.add_new(0x02, "SH", ident.values["PrivateShort"])
    block.add_new(0x03, "DA", ident.dates["PatientBirthDate"])
    block.add_new(0x04, "LO", ident.patient_id)


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta: Any = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


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


def _write_seg(
    path: Path, *, ident: _Identity, uids: dict[str, str], headers: list[Any], truth: np.ndarray
) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    v, d, t = ident.values, ident.dates, ident.times
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=LABEL_NAMES[1],
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_RGB[1]),
        ),
        hd.seg.SegmentDescription(
            segment_number=2,
            segment_label=LABEL_NAMES[2],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[codes.SCT.Liver],
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_RGB[2]),
        ),
    ]
    seg: Any = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=truth,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids["seg_series"],
        series_number=3,
        sop_instance_uid=uids["seg_sop"],
        instance_number=1,
        manufacturer="Atlas Synthetic",
        manufacturer_model_name="Phantom SEG",
        software_versions="1",
        device_serial_number=v["DeviceSerialNumber"],
        content_description="synthetic liver segmentation",
        content_creator_name=v["ContentCreatorName"] + "^",
        content_label="LIVER",
    )
    # highdicom stamps "now"; keep the file reproducible and the dates canaries
    seg.SeriesDescription = v["SegSeriesDescription"]
    seg.SeriesDate = d["StudyDate"]
    seg.SeriesTime = t["SeriesTime"]
    seg.ContentDate = d["StudyDate"]
    seg.ContentTime = t["ContentTime"]
    seg.InstanceCreationDate = d["InstanceCreationDate"]
    seg.InstanceCreationTime = t["InstanceCreationTime"]
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = d["InstanceCreationDate"] + t["InstanceCreationTime"]
    for seq in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(seq, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = uids["seg_dim"]
    seg.InstitutionName = v["InstitutionName"]
    seg.InstitutionAddress = v["InstitutionAddress"]
    seg.OperatorsName = v["OperatorsName"]
    _add_private_block(seg, ident)
    seg.save_as(path, enforce_file_format=True)


def _write_nifti(
    path: Path,
    truth: np.ndarray,
    origin: np.ndarray,
    direction: np.ndarray,
    spacing: tuple[float, float, float],
) -> None:
    """NIfTI-1 mask with data ``(i, j, k) = (x, y, z)`` and a RAS+ affine.

    DICOM geometry is LPS+; NIfTI's world space is RAS+, so the affine is
    ``diag(-1, -1, 1) @ lps_affine``: the x and y rows of the voxel-to-world matrix (and of the
    translation) change sign, the voxel grid stays the same.
    """
    import nibabel as nib

    lps = np.eye(4)
    # NIfTI voxel axes are (i, j, k) = array axes (x, y, z) = Volume axes (2, 1, 0)
    lps[:3, :3] = direction[:, ::-1] * np.asarray(spacing[::-1])[None, :]
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(np.ascontiguousarray(truth).transpose(2, 1, 0), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


# --------------------------------------------------------------------------------------------
# public entry point


def make_study(
    out_dir: Path | str,
    *,
    shape: tuple[int, int, int] = (300, 512, 512),
    spacing: tuple[float, float, float] = (1.5, 0.7, 0.7),
    seed: int = 0,
    oblique: bool = False,
    with_seg: bool = True,
    with_rtstruct: bool = True,
    with_nifti: bool = True,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    patient_id: str | None = None,
    canaries: bool = True,
    signed: bool = False,
    keep_hu: bool = False,
    n_tumours: int = 3,
) -> SyntheticStudy:
    """Write a synthetic CT study (plus SEG, RTSTRUCT, NIfTI) under ``out_dir``.

    Parameters
    ----------
    out_dir:
        Folder to write into (created). Layout: ``CT/IMxxxxx.dcm`` (names in neither slice nor
        instance order), ``seg.dcm``, ``rtstruct.dcm``, ``labels.nii.gz``.
    shape, spacing:
        ``(z, y, x)`` voxels and millimetres (slice spacing, row spacing, column spacing).
    seed:
        Everything (pixels, tumours, UIDs, canary values, dates) follows from ``seed`` and
        ``patient_id``: the same arguments write the same bytes.
    oblique:
        Rotate the image planes (a non-axial ``ImageOrientationPatient``).
    transfer_syntax:
        Explicit/implicit/deflated VR little endian, or a lossless compressed syntax pydicom
        can encode here (see :func:`supported_transfer_syntaxes`); others raise
        :class:`~atlas.errors.InvalidInput`. SEG and RTSTRUCT are always explicit VR little
        endian.
    patient_id:
        Original patient id (default ``CANARY-PID-<token>``).
    canaries:
        Whether :attr:`SyntheticStudy.canaries` lists the identifying values (they are written
        either way; ``False`` returns an empty list).
    signed:
        Store pixels as signed int16 with ``RescaleIntercept`` 0 instead of unsigned 12-bit
        with ``RescaleIntercept`` -1024.
    keep_hu:
        Also return the expected HU volume (int16) in :attr:`SyntheticStudy.hu`.
    n_tumours:
        Tumour spheres in the liver.
    """
    nz, ny, nx = (int(s) for s in shape)
    if min(nz, ny, nx) < 2:
        raise InvalidInput(f"synthetic study shape must be at least 2 in every axis, got {shape}")
    if min(spacing) <= 0:
        raise InvalidInput(f"spacing must be positive, got {spacing}")
    ts, plugin = _check_transfer_syntax(transfer_syntax)
    out = Path(out_dir)
    ct_dir = out / "CT"
    ct_dir.mkdir(parents=True, exist_ok=True)
    spacing_f = (float(spacing[0]), float(spacing[1]), float(spacing[2]))

    ident = _identity(seed, patient_id)
    pid = ident.patient_id
    uids = {
        role: _uid(seed, pid, role)
        for role in (
            "study",
            "series",
            "for",
            "seg_series",
            "seg_sop",
            "seg_dim",
            "rt_series",
            "rt_sop",
        )
    }
    sop_uids = [_uid(seed, pid, "ct", k) for k in range(nz)]

    # geometry: rotation columns = row dir (x), column dir (y), normal (z)
    rot = _rotation(oblique)
    # columns z, y, x; the slice normal is row x column (sorted slices ascend along it)
    direction = np.stack([np.cross(rot[:, 0], rot[:, 1]), rot[:, 1], rot[:, 0]], axis=1)
    centre = np.array([0.0, 0.0, -250.0])
    half = (np.array([nz, ny, nx], dtype=np.float64) - 1) / 2 * np.asarray(spacing_f)
    origin = np.round(centre - direction @ half, 4)
    iop = [_ds_num(float(c), 8) for c in (*rot[:, 0], *rot[:, 1])]

    # instance numbers: head first (slice 0 is the most inferior, so it is numbered last),
    # then a few swapped pairs so they are not in position order either way
    rng = np.random.default_rng([seed, 104729])
    instance_numbers = [nz - k for k in range(nz)]
    for _ in range(min(3, nz // 2)):
        a, b = (int(i) for i in rng.choice(nz, size=2, replace=False))
        instance_numbers[a], instance_numbers[b] = instance_numbers[b], instance_numbers[a]
    names = rng.permutation(nz)
    ct_files = [ct_dir / f"IM{int(names[k]):05d}.dcm" for k in range(nz)]

    phantom = make_phantom((nz, ny, nx), spacing=spacing_f, n_tumours=n_tumours, seed=seed)
    truth = np.zeros((nz, ny, nx), dtype=np.uint8)
    hu_all = np.empty((nz, ny, nx), dtype=np.int16) if keep_hu else None
    headers: list[Any] = []
    for k in range(nz):
        ipp = origin + direction[:, 0] * (spacing_f[0] * k)
        headers.append(
            _ct_header(
                ident=ident,
                uids=uids,
                sop_uid=sop_uids[k],
                instance_number=instance_numbers[k],
                ipp=ipp,
                iop=iop,
                shape=(nz, ny, nx),
                spacing=spacing_f,
                normal=direction[:, 0],
                signed=signed,
            )
        )
    # the phantom's z index 0 is superior (lungs); sorted slice k = phantom slice nz-1-k
    for p0 in range(0, nz, _SLAB):
        p1 = min(nz, p0 + _SLAB)
        img = _slab(p0, p1, (nz, ny, nx), phantom.tumours, seed, "image")
        lab = _slab(p0, p1, (nz, ny, nx), phantom.tumours, seed, "labels")
        lab[lab == 3] = 0
        for p in range(p0, p1):
            k = nz - 1 - p
            truth[k] = lab[p - p0]
            if hu_all is not None:
                hu_all[k] = img[p - p0]
            _write_ct_slice(headers[k], img[p - p0], ct_files[k], ts, plugin, signed)
        del img, lab

    seg_file = rt_file = nifti_file = None
    if with_seg:
        seg_file = out / "seg.dcm"
        _write_seg(seg_file, ident=ident, uids=uids, headers=headers, truth=truth)
    if with_rtstruct:
        rt_file = out / "rtstruct.dcm"
        _write_rtstruct(
            rt_file,
            ident=ident,
            uids=uids,
            headers=headers,
            truth=truth,
            origin=origin,
            direction=direction,
            spacing=spacing_f,
        )
    if with_nifti:
        nifti_file = out / "labels.nii.gz"
        _write_nifti(nifti_file, truth, origin, direction, spacing_f)

    canary_list: list[str] = []
    if canaries:
        canary_list = [*ident.canaries(), uids["study"], uids["series"], uids["for"], *sop_uids]
        if with_seg:
            canary_list += [uids["seg_series"], uids["seg_sop"], uids["seg_dim"]]
        if with_rtstruct:
            canary_list += [uids["rt_series"], uids["rt_sop"]]
        canary_list = list(dict.fromkeys(canary_list))
    return SyntheticStudy(
        out_dir=out,
        ct_files=ct_files,
        seg_file=seg_file,
        rtstruct_file=rt_file,
        nifti_file=nifti_file,
        canaries=canary_list,
        truth_labels=truth,
        hu=hu_all,
        spacing=spacing_f,
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
        patient_id=pid,
        study_uid=uids["study"],
        series_uid=uids["series"],
        frame_of_reference_uid=uids["for"],
        sop_instance_uids=sop_uids,
        instance_numbers=instance_numbers,
        transfer_syntax=ts,
        seg_uid=uids["seg_sop"] if with_seg else None,
        rtstruct_uid=uids["rt_sop"] if with_rtstruct else None,
    )
