"""Find every DICOM object (and NIfTI file) in what an operator points ingest at.

Sources may mix directories (walked recursively), single files, DICOMDIR files (their records
are followed to the referenced files; the DICOMDIR itself is an index, not an image), zip
archives (every member is examined; a damaged member is quarantined and the rest goes on) and
NIfTI files (``.nii``, ``.nii.gz``: collected, not parsed here).

Only headers are read (``stop_before_pixels``), by a thread pool. Each header is also checked
for truncation: the declared pixel data must fit in the file (encapsulated fragments are walked
item by item) and native pixel data must be as long as rows x columns x frames x samples says.
Declared sizes are checked before anything is decoded: an image that would decode to more than
the limit (:class:`~atlas.ingest.safe_io.ReadLimits`), or whose pixel data is far longer than
its header declares, is quarantined. Instances are grouped by (Study Instance UID, Series
Instance UID); SEG and RTSTRUCT objects are kept apart. Inputs are opened read-only and never
modified; only regular files are read, and symlinks and DICOMDIR references are followed only
inside the sources (see :mod:`atlas.ingest.safe_io`).

Quarantine reasons never contain identifying values (names, ids, UIDs, dates); they may name
the file path, which is the operator's own and goes only into their local report.
"""

from __future__ import annotations

import io
import os
import posixpath
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    RTStructureSetStorage,
    SegmentationStorage,
)

from atlas.errors import InvalidInput, NotFound
from atlas.ingest.dicom_io import (
    PIXEL_TAGS,
    _corrupt_reason,
    _deflated_dataset,
    _inflated,
    _parse,
    _Rejected,
    parse_dataset,
    read_dataset,
)
from atlas.ingest.geometry_values import geometry_problem
from atlas.ingest.model import FileRef, InstanceInfo, Quarantined, SeriesGroup
from atlas.ingest.safe_io import (
    ReadLimits,
    check_regular,
    is_within,
    open_member,
    open_regular,
)

__all__ = [
    "SEGMENTATION_MODALITIES",
    "Discovery",
    "discover",
    "is_nifti_name",
    "parse_dataset",
    "read_dataset",
]

#: modalities kept apart from images (labels for them are read by the labels module)
SEGMENTATION_MODALITIES = frozenset({"SEG", "RTSTRUCT"})
_SEGMENTATION_SOP_CLASSES = frozenset(
    {str(SegmentationStorage), str(RTStructureSetStorage), "1.2.840.10008.5.1.4.1.1.66.7"}
)
_NATIVE_SYNTAXES = frozenset(
    {
        str(ImplicitVRLittleEndian),
        str(ExplicitVRLittleEndian),
        str(ExplicitVRBigEndian),
        str(DeflatedExplicitVRLittleEndian),  # native once inflated
    }
)
#: pixel data longer than this many times its declared size (plus slack) is refused
_LONGER_FACTOR = 2
_LONGER_SLACK = 16 * 1024
_RLE = "1.2.840.10008.1.2.5"
#: RLE Lossless decodes to at most 64 times its size (2 bytes -> a run of 128)
_RLE_MAX_RATIO = 64
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})
_UNDEFINED = 0xFFFFFFFF
#: operating-system litter that is skipped silently (compared lower-case)
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: one read fetches a whole typical header (fewer system calls, less GIL hand-over)
_READ_BUFFER = 1 << 16


def is_nifti_name(name: str) -> bool:
    """Whether a file or member name is a NIfTI file (``.nii`` or ``.nii.gz``)."""
    lower = name.lower()
    return lower.endswith(".nii") or lower.endswith(".nii.gz")


@dataclass
class Discovery:
    """What :func:`discover` found.

    ``files_seen`` counts every object examined (files and zip members, DICOMDIR files
    included; a zip archive itself is not counted, its members are) and ``bytes_seen`` their
    sizes (uncompressed for zip members).
    """

    series: list[SeriesGroup] = field(default_factory=list)
    #: SEG and RTSTRUCT objects (headers only), kept apart from the image series
    segmentations: list[InstanceInfo] = field(default_factory=list)
    nifti: list[FileRef] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    files_seen: int = 0
    bytes_seen: int = 0

    def __repr__(self) -> str:
        return (
            f"Discovery(series={len(self.series)}, segmentations={len(self.segmentations)}, "
            f"nifti={len(self.nifti)}, quarantined={len(self.quarantined)}, "
            f"files_seen={self.files_seen})"
        )


# ----------------------------------------------------------------------------------------
# reading


class _ZipCache:
    """Open each archive once; reads of its members are serialised by a lock per archive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._archives: dict[str, tuple[zipfile.ZipFile, threading.Lock]] = {}

    def get(self, path: str) -> tuple[zipfile.ZipFile, threading.Lock]:
        with self._lock:
            entry = self._archives.get(path)
            if entry is None:
                entry = (zipfile.ZipFile(path), threading.Lock())
                self._archives[path] = entry
            return entry

    def open(self, ref: FileRef, limits: ReadLimits) -> IO[bytes]:
        """The member, streamed (capped by ``limits``) into a seekable spooled file."""
        assert ref.member is not None
        zf, lock = self.get(ref.path)
        with lock:
            return open_member(zf, ref.member, limits)

    def close(self) -> None:
        with self._lock:
            for zf, _ in self._archives.values():
                zf.close()
            self._archives.clear()


# ----------------------------------------------------------------------------------------
# header checks


def _last_element_end(ds: Dataset) -> int | None:
    """File offset just past the last top-level element, when it can be known."""
    tags = list(ds.keys())
    if not tags:
        return None
    raw = ds.get_item(max(tags), keep_deferred=True)
    tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    if tell is None or length is None or length == _UNDEFINED:
        return None
    return int(tell) + int(length)


def declared_image_bytes(ds: Dataset) -> int | None:
    """What the pixel data of ``ds`` decodes to, from its header alone (rows x columns x
    frames x samples x bytes per sample), or ``None`` when the header does not say."""
    h = _Header(ds)
    rows, cols, bits = h.us(_ROWS), h.us(_COLUMNS), h.us(_BITS_ALLOCATED)
    if not rows or not cols or not bits:
        return None
    spp = h.us(_SAMPLES_PER_PIXEL) or 1
    frames = max(_opt_int(h.text(_NUMBER_OF_FRAMES)) or 1, 1)
    return rows * cols * frames * spp * max((bits + 7) // 8, 1)


def _far_longer(length: int, declared: int | None) -> bool:
    return declared is not None and length > _LONGER_FACTOR * declared + _LONGER_SLACK


def _expected_native_length(ds: Dataset) -> int | None:
    h = _Header(ds)
    rows, cols, bits = h.us(_ROWS), h.us(_COLUMNS), h.us(_BITS_ALLOCATED)
    spp = h.us(_SAMPLES_PER_PIXEL) or 1
    frames = _opt_int(h.text(_NUMBER_OF_FRAMES)) or 1
    if not rows or not cols or not bits:
        return None
    if (h.text(_PHOTOMETRIC) or "").upper() == "YBR_FULL_422":
        spp = 2  # two bytes per pixel pair, 4:2:2 subsampling
    if bits == 1:
        return (rows * cols * frames * spp + 7) // 8
    return rows * cols * spp * frames * (bits // 8)


def _check_pixels(fp: IO[bytes], ds: Dataset, size: int, ts: str) -> bool:
    """Whether the object holds pixel data; raises :class:`_Rejected` when it is truncated.

    ``fp`` is positioned where ``dcmread(stop_before_pixels=True)`` stopped.
    """
    pos = fp.tell()
    implicit, little = ds.original_encoding
    endian = ">" if little is False else "<"
    head = fp.read(8)
    if len(head) < 4:
        end = _last_element_end(ds)
        # pydicom stops quietly at the end of the data: a last element that ends before
        # or after the end of the file means the file was cut inside an element.
        if pos < size or (end is not None and end != size):
            raise _Rejected("truncated DICOM file: the header ends in the middle of an element")
        return False
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) not in PIXEL_TAGS:
        raise _Rejected("corrupt DICOM header (unreadable data after the last element)")
    if len(head) < 8:
        raise _Rejected("truncated DICOM file: pixel data element is cut off")
    vr = head[4:6]
    if implicit or not (vr.isalpha() and vr.isupper()):
        # Implicit VR (also when a file claims explicit VR but is not, as pydicom tolerates)
        (length,) = struct.unpack(endian + "I", head[4:8])
    elif vr in _LONG_VRS:
        rest = fp.read(4)
        if len(rest) < 4:
            raise _Rejected("truncated DICOM file: pixel data element is cut off")
        (length,) = struct.unpack(endian + "I", rest)
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
    start = fp.tell()
    declared = declared_image_bytes(ds)
    if length == _UNDEFINED:
        length = _walk_fragments(fp, endian, size)
    elif start + length > size:
        raise _Rejected(
            f"truncated DICOM file: pixel data declares {length} bytes but only "
            f"{max(size - start, 0)} are present"
        )
    elif ts in _NATIVE_SYNTAXES:
        expected = _expected_native_length(ds)
        if expected is not None and length < expected:
            raise _Rejected(
                f"pixel data is shorter than its header says ({length} of {expected} bytes)"
            )
    if _far_longer(length, declared):
        raise _Rejected(
            f"pixel data is far longer than its header says ({length} bytes for an image "
            f"of {declared} bytes)"
        )
    if ts == _RLE and declared is not None and declared > _RLE_MAX_RATIO * length:
        # an RLE run of 2 bytes decodes to at most 128: the declared image cannot be there
        raise _Rejected(
            f"RLE pixel data is too short for its header ({length} bytes cannot decode "
            f"to {declared})"
        )
    return True


def _walk_fragments(fp: IO[bytes], endian: str, size: int) -> int:
    """Follow the items of encapsulated pixel data up to the sequence delimiter; returns the
    bytes of all items."""
    total = 0
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise _Rejected("truncated DICOM file: compressed pixel data is cut off")
        group, elem, length = struct.unpack(endian + "HHI", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return total
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise _Rejected("corrupt compressed pixel data (bad fragment item)")
        if fp.tell() + length > size:
            raise _Rejected("truncated DICOM file: compressed pixel data is cut off")
        total += length
        fp.seek(length, io.SEEK_CUR)


# ----------------------------------------------------------------------------------------
# header -> InstanceInfo


_ROWS = 0x00280010
_COLUMNS = 0x00280011
_SAMPLES_PER_PIXEL = 0x00280002
_PHOTOMETRIC = 0x00280004
_NUMBER_OF_FRAMES = 0x00280008
_BITS_ALLOCATED = 0x00280100
_PIXEL_SPACING = 0x00280030
_BURNED_IN = 0x00280301
_IMAGER_PIXEL_SPACING = 0x00181164
_IMAGE_TYPE = 0x00080008
_MODALITY = 0x00080060
_IPP = 0x00200032
_IOP = 0x00200037
_ACQUISITION_NUMBER = 0x00200012
_INSTANCE_NUMBER = 0x00200013
_FRAME_OF_REFERENCE = 0x00200052
_REQUIRED = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
}


class _Header:
    """Fast reads of plain header values (UI, CS, IS, DS, US) straight from pydicom's raw
    elements, without its per-value conversion (discovery reads thousands of headers)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        little = ds.original_encoding[1] is not False
        self._us = struct.Struct("<H" if little else ">H")

    def text(self, tag: int) -> str | None:
        elem = self.ds.get_item(tag, keep_deferred=True)
        value = None if elem is None else elem.value
        if value is None:
            return None
        if isinstance(value, bytes):
            text = value.decode("latin-1")
        elif isinstance(value, str):
            text = value
        elif isinstance(value, list | tuple) or hasattr(value, "__iter__"):
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        return text.strip(" \x00") or None

    def texts(self, tag: int) -> list[str]:
        text = self.text(tag)
        return [part.strip(" \x00") for part in text.split("\\")] if text else []

    def us(self, tag: int) -> int | None:
        elem = self.ds.get_item(tag, keep_deferred=True)
        value = None if elem is None else elem.value
        if isinstance(value, bytes):
            return self._us.unpack(value[:2])[0] if len(value) >= 2 else None
        if isinstance(value, int):
            return value
        return _opt_int(value)


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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


def _functional_item(ds: Dataset, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in the shared, else first per-frame, functional group."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(groups)
        if seq:
            inner = seq[0].get(sequence)
            if inner:
                return inner[0]
    return None


def _instance_info(ref: FileRef, ds: Dataset, has_pixels: bool) -> InstanceInfo:
    h = _Header(ds)
    required = {}
    for keyword, tag in _REQUIRED.items():
        value = h.text(tag)
        if not value:
            raise _Rejected(f"missing required attribute {keyword}")
        required[keyword] = value
    frames = h.text(_NUMBER_OF_FRAMES)
    number_of_frames = _opt_int(frames) if frames else 1
    if number_of_frames is None or number_of_frames < 1:
        raise _Rejected("invalid Number of Frames value")
    enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    iop = _floats(h.texts(_IOP), 6)
    ipp = _floats(h.texts(_IPP), 3) if number_of_frames == 1 else None
    spacing = _spacing(h.texts(_PIXEL_SPACING)) or _spacing(h.texts(_IMAGER_PIXEL_SPACING))
    problem = geometry_problem(
        position=h.texts(_IPP) if number_of_frames == 1 else None,
        orientation=h.texts(_IOP),
        pixel_spacing=h.texts(_PIXEL_SPACING),
        imager_pixel_spacing=h.texts(_IMAGER_PIXEL_SPACING),
        located=bool(h.texts(_IPP) or h.texts(_IOP)),
    )
    if enhanced:
        orient = _functional_item(ds, "PlaneOrientationSequence")
        measures = _functional_item(ds, "PixelMeasuresSequence")
        if orient is not None:
            iop = _floats(orient.get("ImageOrientationPatient"), 6) or iop
        if measures is not None:
            spacing = _spacing(measures.get("PixelSpacing")) or spacing
        problem = problem or geometry_problem(
            orientation=orient.get("ImageOrientationPatient") if orient is not None else None,
            pixel_spacing=measures.get("PixelSpacing") if measures is not None else None,
            located=bool(orient is not None or h.texts(_IOP)),
        )
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    burned = h.text(_BURNED_IN)
    photometric = h.text(_PHOTOMETRIC)
    return InstanceInfo(
        ref=ref,
        sop_class_uid=required["SOPClassUID"],
        sop_instance_uid=required["SOPInstanceUID"],
        study_uid=required["StudyInstanceUID"],
        series_uid=required["SeriesInstanceUID"],
        modality=(h.text(_MODALITY) or "OT").upper(),
        # LO with a character set: let pydicom decode it (the pseudonym is derived from it)
        patient_id=str(ds.get("PatientID", "") or ""),
        frame_of_reference_uid=h.text(_FRAME_OF_REFERENCE),
        rows=h.us(_ROWS),
        columns=h.us(_COLUMNS),
        number_of_frames=number_of_frames,
        samples_per_pixel=h.us(_SAMPLES_PER_PIXEL) or 1,
        photometric=photometric.upper() if photometric else None,
        transfer_syntax=str(ts) if ts else None,
        image_orientation=iop,
        image_position=ipp,
        pixel_spacing=spacing,
        acquisition_number=_opt_int(h.text(_ACQUISITION_NUMBER)),
        instance_number=_opt_int(h.text(_INSTANCE_NUMBER)),
        burned_in_annotation=burned.upper() if burned else None,
        image_type=tuple(h.texts(_IMAGE_TYPE)),
        has_pixel_data=has_pixels,
        geometry_problem=problem,
        bits_allocated=h.us(_BITS_ALLOCATED),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_birth_date=str(ds.get("PatientBirthDate", "") or ""),
    )


def _is_segmentation(info: InstanceInfo) -> bool:
    return info.modality in SEGMENTATION_MODALITIES or info.sop_class_uid in (
        _SEGMENTATION_SOP_CLASSES
    )


# ----------------------------------------------------------------------------------------
# per-object examination (runs in the thread pool)


@dataclass
class _Archive:
    ref: FileRef


@dataclass
class _Dicomdir:
    ref: FileRef
    file_ids: list[tuple[str, ...]]


@dataclass
class _Outcome:
    size: int
    result: InstanceInfo | Quarantined | _Archive | _Dicomdir | None


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


def _examine_stream(ref: FileRef, fp: IO[bytes], size: int, limits: ReadLimits) -> _Outcome:
    head = fp.read(4)
    fp.seek(0)
    if head in _ZIP_MAGICS:
        if ref.member is not None:
            return _Outcome(
                size, Quarantined(ref, "zip archive inside a zip archive (extract it first)")
            )
        return _Outcome(0, _Archive(ref))
    body: IO[bytes] | None = None
    try:
        deflated = _inflated(fp, limits)
        if deflated is not None:
            # checked like any file, on the inflated body (positions are its offsets)
            body = deflated[2]
            ds = _deflated_dataset(deflated, stop_before_pixels=True, defer=True)
            here = body.tell()  # where the header stopped: the pixel data element, if any
            fp, end = body, body.seek(0, io.SEEK_END)
            body.seek(here)
        else:
            ds = _parse(fp, stop_before_pixels=True)
            end = size
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if sop_class == str(MediaStorageDirectoryStorage) or "DirectoryRecordSequence" in ds:
            return _Outcome(size, _Dicomdir(ref, _dicomdir_file_ids(ds)))
        declared = declared_image_bytes(ds)
        if declared is not None:
            limits.check_image(declared)
        has_pixels = _check_pixels(fp, ds, end, ts)
        info = _instance_info(ref, ds, has_pixels)
    except _Rejected as exc:
        return _Outcome(size, Quarantined(ref, str(exc)))
    except InvalidInput as exc:
        return _Outcome(size, Quarantined(ref, exc.message))
    except (
        zlib.error,
        EOFError,
        struct.error,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:
        return _Outcome(size, Quarantined(ref, _corrupt_reason(exc)))
    finally:
        if body is not None:
            body.close()
    if not has_pixels and not _is_segmentation(info):
        reason = "no pixel data"
        if info.rows and info.columns:
            reason = "no pixel data (the header describes an image; the file may be truncated)"
        return _Outcome(size, Quarantined(ref, reason))
    return _Outcome(size, info)


def _examine(ref: FileRef, zips: _ZipCache, limits: ReadLimits) -> _Outcome:
    """Classify and read one object; never raises."""
    name = ref.member if ref.member is not None else ref.path
    if ref.member is None:
        try:
            if is_nifti_name(name):
                return _Outcome(check_regular(ref.path).st_size, None)
            with open_regular(ref.path, buffering=_READ_BUFFER) as fp:
                size = os.fstat(fp.fileno()).st_size
                limits.check_object(size)
                return _examine_stream(ref, fp, size, limits)
        except InvalidInput as exc:
            return _Outcome(0, Quarantined(ref, exc.message))
        except OSError as exc:
            return _Outcome(0, Quarantined(ref, f"cannot read file ({exc.__class__.__name__})"))
    if is_nifti_name(name):
        try:
            size = zips.get(ref.path)[0].getinfo(ref.member).file_size
        except (OSError, KeyError, zipfile.BadZipFile):
            size = 0
        return _Outcome(size, None)
    try:
        member = zips.open(ref, limits)
    except InvalidInput as exc:
        return _Outcome(0, Quarantined(ref, exc.message))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        detail = "bad CRC-32" if "CRC" in str(exc) else exc.__class__.__name__
        return _Outcome(0, Quarantined(ref, f"corrupt zip archive member ({detail})"))
    except NotImplementedError:
        return _Outcome(0, Quarantined(ref, "zip member uses an unsupported compression method"))
    except RuntimeError:
        return _Outcome(0, Quarantined(ref, "encrypted zip member (cannot be read)"))
    except (OSError, KeyError) as exc:
        return _Outcome(0, Quarantined(ref, f"cannot read zip member ({exc.__class__.__name__})"))
    with member:
        size = member.seek(0, io.SEEK_END)
        member.seek(0)
        return _examine_stream(ref, member, size, limits)


# ----------------------------------------------------------------------------------------
# expanding sources


def _skip_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") or base.lower() in _JUNK_NAMES


_OUTSIDE = "symbolic link points outside the sources (not followed)"


def _walk(root: Path, roots: list[str], refused: list[Quarantined]) -> Iterator[FileRef]:
    """Every file below ``root`` in name order. Symlinks, to files and to folders alike, are
    followed only when they resolve inside ``roots`` (others go to ``refused``); each folder
    is visited once, so link loops end. Non-regular files are yielded: reading refuses them."""
    visited: set[str] = set()

    def visit(folder: str) -> Iterator[FileRef]:
        real = os.path.realpath(folder)
        if real in visited:
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir and (entry.name.startswith(".") or entry.name == "__MACOSX"):
                continue
            if not is_dir and _skip_name(entry.name):
                continue
            if entry.is_symlink():
                if not os.path.exists(entry.path):
                    refused.append(Quarantined(FileRef(entry.path), "broken symbolic link"))
                    continue
                if not is_within(entry.path, roots):
                    refused.append(Quarantined(FileRef(entry.path), _OUTSIDE))
                    continue
            if is_dir:
                yield from visit(entry.path)
            else:
                yield FileRef(entry.path)

    yield from visit(str(root))


def _key(ref: FileRef) -> tuple[str, str | None]:
    return (os.path.realpath(ref.path), ref.member)


def _resolve_in_dir(base: str, parts: tuple[str, ...]) -> str | None:
    """Join DICOMDIR file id ``parts`` below ``base``; ids are upper case by the standard,
    so fall back to a case-insensitive match on case-sensitive file systems."""
    exact = os.path.join(base, *parts)
    if os.path.isfile(exact):
        return exact
    current = base
    for part in parts:
        try:
            entries = {e.lower(): e for e in os.listdir(current)}
        except OSError:
            return None
        match = entries.get(part.lower())
        if match is None:
            return None
        current = os.path.join(current, match)
    return current if os.path.isfile(current) else None


def _members(zf: zipfile.ZipFile) -> list[str]:
    names = []
    for info in zf.infolist():
        if info.is_dir() or "__MACOSX/" in info.filename or _skip_name(info.filename):
            continue
        names.append(info.filename)
    return sorted(names)


def discover(
    sources: Iterable[str | Path], *, workers: int | None = None, limits: ReadLimits | None = None
) -> Discovery:
    """Find, classify and group every DICOM object and NIfTI file in ``sources``.

    ``sources`` may mix directories (recursive), files, DICOMDIR files, zip archives and
    NIfTI files. Unusable objects (not DICOM, truncated, corrupt, without pixel data, corrupt
    zip members, files a DICOMDIR names but that are missing, duplicate copies of one SOP
    instance) are quarantined with a reason. ``workers`` sizes the header-reading thread pool
    (default ``min(32, cpu_count + 4)``). Raises :class:`atlas.errors.NotFound` when a source
    does not exist.

    Only regular files are read; symlinks (to files or folders) found in a source folder are
    followed only when they resolve inside one of ``sources``, and the files a DICOMDIR names
    only inside the DICOMDIR's folder; anything else is quarantined with its reason. Declared
    sizes are checked against ``limits`` (default :class:`ReadLimits`) before reading further.
    """
    found = Discovery()
    pending: list[FileRef] = []
    seen: set[tuple[str, str | None]] = set()

    def add(ref: FileRef) -> None:
        key = _key(ref)
        if key not in seen:
            seen.add(key)
            pending.append(ref)

    paths = [Path(s) for s in sources]
    roots = [str(p) for p in paths if p.exists()]
    refused: list[Quarantined] = []
    for path in paths:
        if path.is_dir():
            for ref in _walk(path, roots, refused):
                add(ref)
        elif path.exists():  # regular or not: reading refuses anything but a regular file
            add(FileRef(str(path)))
        else:
            raise NotFound(f"input path does not exist: {path}", location=str(path))
    found.quarantined.extend(refused)
    found.files_seen += len(refused)
    limits = limits or ReadLimits()

    instances: list[InstanceInfo] = []
    zips = _ZipCache()
    max_workers = workers or min(32, (os.cpu_count() or 1) + 4)
    try:
        with ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="atlas-discover"
        ) as pool:
            while pending:
                batch, pending = pending, []
                for ref, outcome in zip(
                    batch, pool.map(lambda r: _examine(r, zips, limits), batch), strict=True
                ):
                    _collect(ref, outcome, found, instances, zips, add)
    finally:
        zips.close()
    _group(found, instances)
    found.nifti.sort(key=lambda r: r.display)
    found.quarantined.sort(key=lambda q: q.ref.display)
    return found


def _collect(
    ref: FileRef,
    outcome: _Outcome,
    found: Discovery,
    instances: list[InstanceInfo],
    zips: _ZipCache,
    add: Any,
) -> None:
    result = outcome.result
    if not isinstance(result, _Archive):
        found.files_seen += 1
        found.bytes_seen += outcome.size
    if result is None:
        found.nifti.append(ref)
    elif isinstance(result, InstanceInfo):
        instances.append(result)
    elif isinstance(result, Quarantined):
        found.quarantined.append(result)
    elif isinstance(result, _Archive):
        try:
            zf, lock = zips.get(ref.path)
            with lock:
                members = _members(zf)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            found.files_seen += 1
            found.quarantined.append(
                Quarantined(ref, f"not a readable zip archive ({exc.__class__.__name__})")
            )
            return
        for member in members:
            add(FileRef(ref.path, member))
    elif isinstance(result, _Dicomdir):
        _follow_dicomdir(result, found, zips, add)


_BAD_FILE_ID = "DICOMDIR references a file outside its own folder (refused)"


def _relative_file_id(parts: tuple[str, ...]) -> bool:
    """A File ID is relative components below the DICOMDIR (PS3.10 8.5): no ``.``/``..``,
    separators, drive letters or NUL."""
    return all(p not in (".", "..") and not any(c in p for c in "/\\:\x00") for p in parts)


def _follow_dicomdir(dicomdir: _Dicomdir, found: Discovery, zips: _ZipCache, add: Any) -> None:
    ref = dicomdir.ref
    for parts in dicomdir.file_ids:
        if not _relative_file_id(parts):
            found.quarantined.append(Quarantined(ref, _BAD_FILE_ID))
    file_ids = [parts for parts in dicomdir.file_ids if _relative_file_id(parts)]
    if ref.member is None:
        base = os.path.dirname(ref.path) or "."
        for parts in file_ids:
            resolved = _resolve_in_dir(base, parts)
            if resolved is not None and not is_within(resolved, [base]):
                found.quarantined.append(Quarantined(ref, _BAD_FILE_ID))
            elif resolved is None:
                missing = FileRef(os.path.join(base, *parts))
                found.quarantined.append(
                    Quarantined(missing, "file referenced by DICOMDIR is missing")
                )
            else:
                add(FileRef(resolved))
        return
    zf, lock = zips.get(ref.path)
    with lock:
        names = {n.lower(): n for n in zf.namelist()}
    base_member = posixpath.dirname(ref.member)
    for parts in file_ids:
        wanted = posixpath.join(base_member, *parts)
        name = names.get(wanted.lower())
        if name is None:
            found.quarantined.append(
                Quarantined(FileRef(ref.path, wanted), "file referenced by DICOMDIR is missing")
            )
        else:
            add(FileRef(ref.path, name))


def _group(found: Discovery, instances: list[InstanceInfo]) -> None:
    """Group by (study, series); drop second copies of one SOP instance."""
    instances.sort(key=lambda i: i.ref.display)
    by_uid: set[str] = set()
    groups: dict[tuple[str, str], SeriesGroup] = {}
    for info in instances:
        if info.sop_instance_uid in by_uid:
            found.quarantined.append(
                Quarantined(
                    info.ref, "duplicate copy: another input file has the same SOP Instance UID"
                )
            )
            continue
        by_uid.add(info.sop_instance_uid)
        if _is_segmentation(info):
            found.segmentations.append(info)
            continue
        key = (info.study_uid, info.series_uid)
        group = groups.get(key)
        if group is None:
            group = groups[key] = SeriesGroup(info.study_uid, info.series_uid, info.modality)
        group.instances.append(info)
    for group in groups.values():
        group.instances.sort(
            key=lambda i: (
                i.instance_number if i.instance_number is not None else 2**31,
                i.ref.display,
            )
        )
    found.series = [groups[k] for k in sorted(groups)]
