"""Examining one object: its header read, checked and turned into an instance or a reason.

The header is read alone (``stop_before_pixels``), checked for truncation and declared sizes,
and turned into an :class:`~atlas.ingest.model.InstanceInfo` or a
:class:`~atlas.ingest.model.Quarantined` reason.

Declared sizes are checked before anything is decoded: an image that would decode to more
than the limit (:class:`~atlas.ingest.safe_io.ReadLimits`), or whose pixel data is far longer
than its header declares, is quarantined (see :mod:`atlas.dicom.pixel_data`). Reasons never
contain identifying values (names, ids, UIDs, dates); they may name the file path.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any

from pydicom.dataset import Dataset
from pydicom.uid import MediaStorageDirectoryStorage, RTStructureSetStorage, SegmentationStorage

from atlas.dicom.functional_groups import functional_group_item, is_enhanced
from atlas.dicom.geometry_values import geometry_problem
from atlas.dicom.pixel_data import check_pixel_data, declared_image_bytes
from atlas.dicom.raw_header import (
    ACQUISITION_NUMBER,
    BITS_ALLOCATED,
    BURNED_IN,
    COLUMNS,
    FRAME_OF_REFERENCE,
    IMAGE_TYPE,
    IMAGER_PIXEL_SPACING,
    INSTANCE_NUMBER,
    IOP,
    IPP,
    MODALITY,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC,
    PIXEL_SPACING,
    ROWS,
    SAMPLES_PER_PIXEL,
    RawHeader,
    opt_int,
)
from atlas.errors import InvalidInput
from atlas.ingest.dicom_io import (
    Rejected,
    corrupt_reason,
    deflated_dataset,
    inflated_body,
    parse_or_reject,
)
from atlas.ingest.discover.sources import ZipCache, is_nifti_name
from atlas.ingest.model import FileRef, InstanceInfo, Quarantined
from atlas.ingest.safe_io import ReadLimits, check_regular, open_regular

__all__ = [
    "SEGMENTATION_MODALITIES",
    "Archive",
    "Dicomdir",
    "Outcome",
    "examine",
    "is_segmentation",
]

#: modalities kept apart from images (labels for them are read by the labels module)
SEGMENTATION_MODALITIES = frozenset({"SEG", "RTSTRUCT"})
_SEGMENTATION_SOP_CLASSES = frozenset(
    {str(SegmentationStorage), str(RTStructureSetStorage), "1.2.840.10008.5.1.4.1.1.66.7"}
)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: one read fetches a whole typical header (fewer system calls, less GIL hand-over)
_READ_BUFFER = 1 << 16
_REQUIRED = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if not isinstance(value, str) else [value]))
    except (TypeError, ValueError):
        return None
    return values if len(values) == n else None


def _spacing(value: Any) -> tuple[float, ...] | None:
    """A (row, column) spacing when both values are positive."""
    values = _floats(value, 2)
    return values if values is not None and min(values) > 0 else None


def _instance_info(ref: FileRef, ds: Dataset, has_pixels: bool) -> InstanceInfo:
    h = RawHeader(ds)
    required = {}
    for keyword, tag in _REQUIRED.items():
        value = h.text(tag)
        if not value:
            raise Rejected(f"missing required attribute {keyword}")
        required[keyword] = value
    frames = h.text(NUMBER_OF_FRAMES)
    number_of_frames = opt_int(frames) if frames else 1
    if number_of_frames is None or number_of_frames < 1:
        raise Rejected("invalid Number of Frames value")
    enhanced = is_enhanced(ds)
    iop = _floats(h.texts(IOP), 6)
    ipp = _floats(h.texts(IPP), 3) if number_of_frames == 1 else None
    spacing = _spacing(h.texts(PIXEL_SPACING)) or _spacing(h.texts(IMAGER_PIXEL_SPACING))
    problem = geometry_problem(
        position=h.texts(IPP) if number_of_frames == 1 else None,
        orientation=h.texts(IOP),
        pixel_spacing=h.texts(PIXEL_SPACING),
        imager_pixel_spacing=h.texts(IMAGER_PIXEL_SPACING),
        located=bool(h.texts(IPP) or h.texts(IOP)),
    )
    if enhanced:
        orient = functional_group_item(ds, "PlaneOrientationSequence")
        measures = functional_group_item(ds, "PixelMeasuresSequence")
        if orient is not None:
            iop = _floats(orient.get("ImageOrientationPatient"), 6) or iop
        if measures is not None:
            spacing = _spacing(measures.get("PixelSpacing")) or spacing
        problem = problem or geometry_problem(
            orientation=orient.get("ImageOrientationPatient") if orient is not None else None,
            pixel_spacing=measures.get("PixelSpacing") if measures is not None else None,
            located=bool(orient is not None or h.texts(IOP)),
        )
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    burned = h.text(BURNED_IN)
    photometric = h.text(PHOTOMETRIC)
    return InstanceInfo(
        ref=ref,
        sop_class_uid=required["SOPClassUID"],
        sop_instance_uid=required["SOPInstanceUID"],
        study_uid=required["StudyInstanceUID"],
        series_uid=required["SeriesInstanceUID"],
        modality=(h.text(MODALITY) or "OT").upper(),
        # LO with a character set: let pydicom decode it (the pseudonym is derived from it)
        patient_id=str(ds.get("PatientID", "") or ""),
        frame_of_reference_uid=h.text(FRAME_OF_REFERENCE),
        rows=h.us(ROWS),
        columns=h.us(COLUMNS),
        number_of_frames=number_of_frames,
        samples_per_pixel=h.us(SAMPLES_PER_PIXEL) or 1,
        photometric=photometric.upper() if photometric else None,
        transfer_syntax=str(ts) if ts else None,
        image_orientation=iop,
        image_position=ipp,
        pixel_spacing=spacing,
        acquisition_number=opt_int(h.text(ACQUISITION_NUMBER)),
        instance_number=opt_int(h.text(INSTANCE_NUMBER)),
        burned_in_annotation=burned.upper() if burned else None,
        image_type=tuple(h.texts(IMAGE_TYPE)),
        has_pixel_data=has_pixels,
        geometry_problem=problem,
        bits_allocated=h.us(BITS_ALLOCATED),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
    )


def is_segmentation(info: InstanceInfo) -> bool:
    """Whether ``info`` is a SEG or RTSTRUCT object (kept apart from the image series)."""
    return info.modality in SEGMENTATION_MODALITIES or info.sop_class_uid in (
        _SEGMENTATION_SOP_CLASSES
    )


@dataclass
class Archive:
    """A zip archive: its members are examined next."""

    ref: FileRef


@dataclass
class Dicomdir:
    """A DICOMDIR: the files it names are examined next."""

    ref: FileRef
    file_ids: list[tuple[str, ...]]


@dataclass
class Outcome:
    """What examining one object gave, and its size in bytes."""

    size: int
    result: InstanceInfo | Quarantined | Archive | Dicomdir | None


def _dicomdir_file_ids(ds: Dataset) -> list[tuple[str, ...]]:
    ids: list[tuple[str, ...]] = []
    for record in ds.get("DirectoryRecordSequence", None) or []:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        cleaned = tuple(str(p).strip() for p in parts if str(p).strip())
        if cleaned:
            ids.append(cleaned)
    return ids


def _examine_stream(ref: FileRef, fp: IO[bytes], size: int, limits: ReadLimits) -> Outcome:
    head = fp.read(4)
    fp.seek(0)
    if head in _ZIP_MAGICS:
        if ref.member is not None:
            return Outcome(
                size, Quarantined(ref, "zip archive inside a zip archive (extract it first)")
            )
        return Outcome(0, Archive(ref))
    body: IO[bytes] | None = None
    try:
        deflated = inflated_body(fp, limits)
        if deflated is not None:
            # checked like any file, on the inflated body (positions are its offsets)
            body = deflated[2]
            ds = deflated_dataset(deflated, stop_before_pixels=True, defer=True)
            here = body.tell()  # where the header stopped: the pixel data element, if any
            fp, end = body, body.seek(0, io.SEEK_END)
            body.seek(here)
        else:
            ds = parse_or_reject(fp, stop_before_pixels=True)
            end = size
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if sop_class == str(MediaStorageDirectoryStorage) or "DirectoryRecordSequence" in ds:
            return Outcome(size, Dicomdir(ref, _dicomdir_file_ids(ds)))
        declared = declared_image_bytes(ds)
        if declared is not None:
            limits.check_image(declared)
        has_pixels = check_pixel_data(fp, ds, end, ts)
        info = _instance_info(ref, ds, has_pixels)
    except Rejected as exc:
        return Outcome(size, Quarantined(ref, str(exc)))
    except InvalidInput as exc:
        return Outcome(size, Quarantined(ref, exc.message))
    except (
        zlib.error,
        EOFError,
        struct.error,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:
        return Outcome(size, Quarantined(ref, corrupt_reason(exc)))
    finally:
        if body is not None:
            body.close()
    if not has_pixels and not is_segmentation(info):
        reason = "no pixel data"
        if info.rows and info.columns:
            reason = "no pixel data (the header describes an image; the file may be truncated)"
        return Outcome(size, Quarantined(ref, reason))
    return Outcome(size, info)


def examine(ref: FileRef, zips: ZipCache, limits: ReadLimits) -> Outcome:
    """Classify and read one object; never raises."""
    name = ref.member if ref.member is not None else ref.path
    if ref.member is None:
        try:
            if is_nifti_name(name):
                return Outcome(check_regular(ref.path).st_size, None)
            with open_regular(ref.path, buffering=_READ_BUFFER) as fp:
                size = os.fstat(fp.fileno()).st_size
                limits.check_object(size)
                return _examine_stream(ref, fp, size, limits)
        except InvalidInput as exc:
            return Outcome(0, Quarantined(ref, exc.message))
        except OSError as exc:
            return Outcome(0, Quarantined(ref, f"cannot read file ({exc.__class__.__name__})"))
    if is_nifti_name(name):
        try:
            size = zips.get(ref.path)[0].getinfo(ref.member).file_size
        except (OSError, KeyError, zipfile.BadZipFile):
            size = 0
        return Outcome(size, None)
    try:
        member = zips.open(ref, limits)
    except InvalidInput as exc:
        return Outcome(0, Quarantined(ref, exc.message))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        detail = "bad CRC-32" if "CRC" in str(exc) else exc.__class__.__name__
        return Outcome(0, Quarantined(ref, f"corrupt zip archive member ({detail})"))
    except NotImplementedError:
        return Outcome(0, Quarantined(ref, "zip member uses an unsupported compression method"))
    except RuntimeError:
        return Outcome(0, Quarantined(ref, "encrypted zip member (cannot be read)"))
    except (OSError, KeyError) as exc:
        return Outcome(0, Quarantined(ref, f"cannot read zip member ({exc.__class__.__name__})"))
    with member:
        size = member.seek(0, io.SEEK_END)
        member.seek(0)
        return _examine_stream(ref, member, size, limits)
