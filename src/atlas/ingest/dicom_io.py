"""Reading one DICOM object the way every ingest step does.

The steps that read this way: discovery, series headers, pixel decoding, SEG/RTSTRUCT matching
and labels.

Objects are opened through :mod:`atlas.ingest.safe_io` (regular files only, zip members streamed
with the limit). ``dcmread`` with ``force=False`` first; a bare data set without preamble or file
meta is accepted, as pydicom does with ``force=True``, when it starts like one and carries valid
SOP Class/Instance UIDs. A Deflated Explicit VR Little Endian body is inflated in a stream capped
by the limit (pydicom would inflate it whole in memory). Header-only reads leave values above
1 MiB unread.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import IO, Any, BinaryIO, cast

import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info
from pydicom.filereader import read_dataset as _read_body
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from atlas.dicom.pixel_data import PIXEL_TAGS
from atlas.errors import AtlasError, InvalidInput
from atlas.ingest import quiet
from atlas.ingest.model import FileRef
from atlas.ingest.safe_io import ReadLimits, inflate, open_member, open_regular

__all__ = [
    "Rejected",
    "corrupt_reason",
    "deflated_dataset",
    "inflated_body",
    "open_input",
    "parse_dataset",
    "parse_or_reject",
    "read_dataset",
]

#: header-only reads do not load values above this size (discovery never needs them)
_DEFER_BYTES = 1024 * 1024


class Rejected(AtlasError):
    """An object is not usable; the message is the quarantine reason.

    Internal to ingest's reading steps: discovery turns it into a quarantine entry and
    :func:`parse_dataset` into :class:`~atlas.errors.InvalidInput`; it never escapes a public
    call.
    """


def _looks_like_bare_dataset(head: bytes) -> bool:
    """Whether ``head`` starts like a DICOM data set without preamble/meta.

    Such a data set starts with an element of group 0002 (meta), 0004 (directory) or 0008, in
    either byte order (not 0000: zeros would parse as one).
    """
    return head[:2] in {bytes(p) for g in (2, 4, 8) for p in ((g, 0), (0, g))}


def _is_uid(value: Any) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text)


def inflated_body(
    fp: IO[bytes], limits: ReadLimits
) -> tuple[bytes, FileMetaDataset, IO[bytes]] | None:
    """The preamble, file meta and inflated body of a Deflated Explicit VR Little Endian file.

    The body is streamed, capped by ``limits``; ``None`` (``fp`` rewound) for any other input.

    pydicom would inflate the whole body in memory first; this is the bounded way in.
    """
    start = fp.tell()
    head = fp.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        fp.seek(start)
        return None
    try:
        meta = _read_file_meta_info(cast(BinaryIO, fp))
    except Exception:
        fp.seek(start)
        return None
    if str(meta.get("TransferSyntaxUID", "") or "") != str(DeflatedExplicitVRLittleEndian):
        fp.seek(start)
        return None
    return head[:128], meta, inflate(fp, limits)


def _stop_at_pixels(tag: Any, vr: Any, length: int) -> bool:
    return (int(tag) >> 16, int(tag) & 0xFFFF) in PIXEL_TAGS


def deflated_dataset(
    parts: tuple[bytes, FileMetaDataset, IO[bytes]], *, stop_before_pixels: bool, defer: bool
) -> Dataset:
    """The data set of an inflated body (:func:`inflated_body`'s result).

    ``defer`` leaves values above 1 MiB unread, ``stop_before_pixels`` stops at the pixel data
    element.
    """
    preamble, meta, body = parts
    ds = _read_body(
        cast(BinaryIO, body),
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_stop_at_pixels if stop_before_pixels else None,
        defer_size=_DEFER_BYTES if defer else None,
    )
    return FileDataset("", ds, preamble, meta, is_implicit_VR=False, is_little_endian=True)


def parse_or_reject(fp: IO[bytes], *, stop_before_pixels: bool) -> Dataset:
    """Parse a DICOM object, or raise :class:`Rejected`.

    ``dcmread`` with ``force=False`` first; bare data sets (no preamble) are accepted when
    they start like one and carry valid SOP Class/Instance UIDs.

    Header-only reads leave values above 1 MiB unread (discovery never needs them).
    """
    start = fp.tell()
    defer = _DEFER_BYTES if stop_before_pixels else None
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, defer_size=defer)
        _ensure_transfer_syntax(ds)
        return ds
    except InvalidDicomError:
        fp.seek(start)
        head = fp.read(8)
        if not _looks_like_bare_dataset(head):
            raise Rejected("not a DICOM file") from None
    fp.seek(start)
    try:
        ds = pydicom.dcmread(
            fp, stop_before_pixels=stop_before_pixels, force=True, defer_size=defer
        )
        plausible = _is_uid(ds.get("SOPClassUID")) and _is_uid(ds.get("SOPInstanceUID"))
    except Exception:
        plausible = False
    if not plausible:
        raise Rejected("not a DICOM file")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Give a data set read without file meta the transfer syntax it was encoded in."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def parse_dataset(
    fp: IO[bytes],
    *,
    stop_before_pixels: bool = True,
    location: str | None = None,
    limits: ReadLimits | None = None,
) -> Dataset:
    """Parse one DICOM object from a binary file object the way ingest does.

    ``force=False`` first; a bare data set without preamble/file meta is accepted only when it
    starts like one and carries valid SOP Class/Instance UIDs. A deflated body is inflated in a
    stream capped by ``limits`` (default :class:`ReadLimits`). Raises
    :class:`atlas.errors.InvalidInput` with a reason fit for the quarantine report (e.g.
    ``"not a DICOM file"``); ``location`` names the object in the error.
    """
    limits = limits or ReadLimits()
    quiet.install()  # pydicom's warnings quote original values: never shown as text
    try:
        deflated = inflated_body(fp, limits)
        if deflated is not None:
            with deflated[2]:
                return deflated_dataset(
                    deflated, stop_before_pixels=stop_before_pixels, defer=False
                )
        return parse_or_reject(fp, stop_before_pixels=stop_before_pixels)
    except InvalidInput as exc:
        raise type(exc)(exc.message, location=location) from None
    except Rejected as exc:
        raise InvalidInput(str(exc), location=location) from None
    except (EOFError, struct.error, zlib.error, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInput(corrupt_reason(exc), location=location) from None


def open_input(ref: FileRef, limits: ReadLimits) -> IO[bytes]:
    """Open an input object read-only, the safe way, or raise :class:`InvalidInput`.

    A regular file (size checked against the object limit), or a zip member streamed with the
    limit.
    """
    try:
        if ref.member is None:
            fp = open_regular(ref.path)
            try:
                limits.check_object(os.fstat(fp.fileno()).st_size)
            except BaseException:
                fp.close()
                raise
            return fp
        with open_regular(ref.path) as archive, zipfile.ZipFile(archive) as zf:
            return open_member(zf, ref.member, limits)
    except InvalidInput as exc:
        raise type(exc)(exc.message, location=ref.display) from None
    except (OSError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError, EOFError) as exc:
        raise InvalidInput(
            f"cannot read input ({exc.__class__.__name__})", location=ref.display
        ) from None


def read_dataset(
    ref: FileRef, *, stop_before_pixels: bool = True, limits: ReadLimits | None = None
) -> Dataset:
    """Read one DICOM object (file or zip member) read-only.

    See :func:`parse_dataset` and :func:`open_input`. Every ingest step reads its DICOM inputs
    through this function.
    """
    limits = limits or ReadLimits()
    try:
        with open_input(ref, limits) as fp:
            return parse_dataset(
                fp, stop_before_pixels=stop_before_pixels, location=ref.display, limits=limits
            )
    except (OSError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError) as exc:
        raise InvalidInput(
            f"cannot read input ({exc.__class__.__name__})", location=ref.display
        ) from None


def corrupt_reason(exc: BaseException) -> str:
    """The quarantine reason for an exception raised while parsing a header (no values)."""
    if isinstance(exc, EOFError | struct.error):
        return "truncated or corrupt DICOM header (unexpected end of data)"
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.__class__.__name__})"
    return f"corrupt DICOM header ({exc.__class__.__name__})"
