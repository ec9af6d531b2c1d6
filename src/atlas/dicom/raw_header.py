"""Plain header values read straight from pydicom's raw elements.

pydicom converts each value on access (a ``DSfloat`` or ``IS`` object per number, a
``MultiValue`` per list); reading thousands of headers, that conversion dominates. A
:class:`RawHeader` reads UI, CS, IS, DS and US values from the raw bytes instead, and
tolerates malformed values (``None`` rather than an exception). The tag constants name the
Image Pixel, General Image and Image Plane attributes ingest reads this way.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset

__all__ = [
    "ACQUISITION_NUMBER",
    "BITS_ALLOCATED",
    "BURNED_IN",
    "COLUMNS",
    "FRAME_OF_REFERENCE",
    "IMAGER_PIXEL_SPACING",
    "IMAGE_TYPE",
    "INSTANCE_NUMBER",
    "IOP",
    "IPP",
    "MODALITY",
    "NUMBER_OF_FRAMES",
    "PHOTOMETRIC",
    "PIXEL_SPACING",
    "ROWS",
    "SAMPLES_PER_PIXEL",
    "RawHeader",
    "opt_int",
]

ROWS = 0x00280010
COLUMNS = 0x00280011
SAMPLES_PER_PIXEL = 0x00280002
PHOTOMETRIC = 0x00280004
NUMBER_OF_FRAMES = 0x00280008
BITS_ALLOCATED = 0x00280100
PIXEL_SPACING = 0x00280030
BURNED_IN = 0x00280301
IMAGER_PIXEL_SPACING = 0x00181164
IMAGE_TYPE = 0x00080008
MODALITY = 0x00080060
IPP = 0x00200032
IOP = 0x00200037
ACQUISITION_NUMBER = 0x00200012
INSTANCE_NUMBER = 0x00200013
FRAME_OF_REFERENCE = 0x00200052


class RawHeader:
    """Fast reads of plain header values (UI, CS, IS, DS, US).

    Values are read straight from pydicom's raw elements, without its per-value conversion
    (discovery reads thousands of headers).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A data set as read (values may still be raw bytes).
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        little = ds.original_encoding[1] is not False
        self._us = struct.Struct("<H" if little else ">H")

    def text(self, tag: int) -> str | None:
        r"""The value of ``tag`` as text, stripped of padding.

        Multiple values are joined by ``\``; ``None`` when absent or empty.
        """
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
        """The values of ``tag`` as a list of stripped strings (empty when absent)."""
        text = self.text(tag)
        return [part.strip(" \x00") for part in text.split("\\")] if text else []

    def us(self, tag: int) -> int | None:
        """An unsigned short (US) value, decoded in the data set's byte order.

        ``None`` when absent or unreadable.
        """
        elem = self.ds.get_item(tag, keep_deferred=True)
        value = None if elem is None else elem.value
        if isinstance(value, bytes):
            return self._us.unpack(value[:2])[0] if len(value) >= 2 else None
        if isinstance(value, int):
            return value
        return opt_int(value)


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def opt_int(value: Any) -> int | None:
    """``int(value)``, or ``None`` when it is absent, empty or not an integer."""
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
