"""Whether the pixel data a DICOM header declares is really in the file (no decoding).

Checked from the header and the bytes after it: the declared pixel data must fit in the file
(encapsulated fragments are walked item by item), native pixel data must be as long as
rows x columns x frames x samples says, pixel data far longer than the image it declares is
refused, and RLE data too short to decode to its image is refused. A failed check raises
:class:`atlas.errors.InvalidInput` whose message is fit for a quarantine report (it names no
value from the header).
"""

from __future__ import annotations

import io
import struct
from typing import IO

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from atlas.dicom.raw_header import (
    BITS_ALLOCATED,
    COLUMNS,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC,
    ROWS,
    SAMPLES_PER_PIXEL,
    RawHeader,
    opt_int,
)
from atlas.errors import InvalidInput

__all__ = [
    "PIXEL_TAGS",
    "check_pixel_data",
    "declared_image_bytes",
    "expected_native_length",
    "walk_fragments",
]

#: (group, element) of Pixel Data, Float Pixel Data and Double Float Pixel Data
PIXEL_TAGS = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})
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
_LONG_VRS = frozenset({b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"})
_UNDEFINED = 0xFFFFFFFF


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
    """What the pixel data of ``ds`` decodes to, from its header alone.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A header (read with ``stop_before_pixels``).

    Returns
    -------
    int or None
        rows x columns x frames x samples x bytes per sample (whole bytes per sample), or
        ``None`` when the header does not give rows, columns and bits allocated.
    """
    h = RawHeader(ds)
    rows, cols, bits = h.us(ROWS), h.us(COLUMNS), h.us(BITS_ALLOCATED)
    if not rows or not cols or not bits:
        return None
    spp = h.us(SAMPLES_PER_PIXEL) or 1
    frames = max(opt_int(h.text(NUMBER_OF_FRAMES)) or 1, 1)
    return rows * cols * frames * spp * max((bits + 7) // 8, 1)


def _far_longer(length: int, declared: int | None) -> bool:
    return declared is not None and length > _LONGER_FACTOR * declared + _LONGER_SLACK


def expected_native_length(ds: Dataset) -> int | None:
    """The length native (uncompressed) pixel data of ``ds`` must have, in bytes.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A header (read with ``stop_before_pixels``); malformed values are tolerated.

    Returns
    -------
    int or None
        rows x columns x frames x samples x bytes per sample; 1-bit data packed to whole
        bytes; YBR_FULL_422 two bytes per pixel (4:2:2). ``None`` when the header does not
        give rows, columns and bits allocated.
    """
    h = RawHeader(ds)
    rows, cols, bits = h.us(ROWS), h.us(COLUMNS), h.us(BITS_ALLOCATED)
    spp = h.us(SAMPLES_PER_PIXEL) or 1
    frames = opt_int(h.text(NUMBER_OF_FRAMES)) or 1
    if not rows or not cols or not bits:
        return None
    if (h.text(PHOTOMETRIC) or "").upper() == "YBR_FULL_422":
        spp = 2  # two bytes per pixel pair, 4:2:2 subsampling
    if bits == 1:
        return (rows * cols * frames * spp + 7) // 8
    return rows * cols * spp * frames * (bits // 8)


def check_pixel_data(fp: IO[bytes], ds: Dataset, size: int, ts: str) -> bool:
    """Whether the object holds pixel data, checking that it is all there.

    Parameters
    ----------
    fp : binary file object
        The object, positioned where ``dcmread(stop_before_pixels=True)`` stopped.
    ds : pydicom.dataset.Dataset
        The header read from ``fp``.
    size : int
        The size of the object in bytes.
    ts : str
        Its transfer syntax UID.

    Returns
    -------
    bool
        ``True`` when a pixel data element follows the header, ``False`` when the object
        ends cleanly after it.

    Raises
    ------
    atlas.errors.InvalidInput
        The file is truncated or corrupt, or its pixel data is far longer (or, for RLE, far
        shorter) than the image its header declares.
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
            raise InvalidInput("truncated DICOM file: the header ends in the middle of an element")
        return False
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) not in PIXEL_TAGS:
        raise InvalidInput("corrupt DICOM header (unreadable data after the last element)")
    if len(head) < 8:
        raise InvalidInput("truncated DICOM file: pixel data element is cut off")
    vr = head[4:6]
    if implicit or not (vr.isalpha() and vr.isupper()):
        # Implicit VR (also when a file claims explicit VR but is not, as pydicom tolerates)
        (length,) = struct.unpack(endian + "I", head[4:8])
    elif vr in _LONG_VRS:
        rest = fp.read(4)
        if len(rest) < 4:
            raise InvalidInput("truncated DICOM file: pixel data element is cut off")
        (length,) = struct.unpack(endian + "I", rest)
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
    start = fp.tell()
    declared = declared_image_bytes(ds)
    if length == _UNDEFINED:
        length = walk_fragments(fp, endian, size)
    elif start + length > size:
        raise InvalidInput(
            f"truncated DICOM file: pixel data declares {length} bytes but only "
            f"{max(size - start, 0)} are present"
        )
    elif ts in _NATIVE_SYNTAXES:
        expected = expected_native_length(ds)
        if expected is not None and length < expected:
            raise InvalidInput(
                f"pixel data is shorter than its header says ({length} of {expected} bytes)"
            )
    if _far_longer(length, declared):
        raise InvalidInput(
            f"pixel data is far longer than its header says ({length} bytes for an image "
            f"of {declared} bytes)"
        )
    if ts == _RLE and declared is not None and declared > _RLE_MAX_RATIO * length:
        # an RLE run of 2 bytes decodes to at most 128: the declared image cannot be there
        raise InvalidInput(
            f"RLE pixel data is too short for its header ({length} bytes cannot decode "
            f"to {declared})"
        )
    return True


def walk_fragments(fp: IO[bytes], endian: str, size: int) -> int:
    """Follow the items of encapsulated pixel data up to the sequence delimiter.

    Parameters
    ----------
    fp : binary file object
        Positioned on the first item (the Basic Offset Table item).
    endian : str
        ``"<"`` or ``">"``, the byte order of the item tags.
    size : int
        The size of the object in bytes (no item may reach past it).

    Returns
    -------
    int
        The bytes of all items.

    Raises
    ------
    atlas.errors.InvalidInput
        An item is cut off or is not a fragment item.
    """
    total = 0
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise InvalidInput("truncated DICOM file: compressed pixel data is cut off")
        group, elem, length = struct.unpack(endian + "HHI", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return total
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise InvalidInput("corrupt compressed pixel data (bad fragment item)")
        if fp.tell() + length > size:
            raise InvalidInput("truncated DICOM file: compressed pixel data is cut off")
        total += length
        fp.seek(length, io.SEEK_CUR)
