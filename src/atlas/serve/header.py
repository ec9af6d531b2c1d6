"""The de-identified header summary of a series, as the metadata route shows it.

Ingest keeps the whole de-identified DICOM header of a series under the image's ``atlas.dicom``
attribute (the DICOM JSON model). The server shows only a fixed list of acquisition and
pixel-description attributes from it (:data:`SUMMARY_TAGS`): no UID, date, time, name or free
text, even though the stored header already carries only pseudonyms and shifted dates, so a
mistake upstream cannot reach a browser through this route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SUMMARY_TAGS", "header_summary"]

#: DICOM tag -> keyword of the attributes the summary shows (acquisition and pixel facts only)
SUMMARY_TAGS: dict[str, str] = {
    "00080008": "ImageType",
    "00080060": "Modality",
    "00080070": "Manufacturer",
    "00081090": "ManufacturerModelName",
    "00100040": "PatientSex",
    "00101010": "PatientAge",
    "00180015": "BodyPartExamined",
    "00180023": "MRAcquisitionType",
    "00180050": "SliceThickness",
    "00180060": "KVP",
    "00180080": "RepetitionTime",
    "00180081": "EchoTime",
    "00180087": "MagneticFieldStrength",
    "00180088": "SpacingBetweenSlices",
    "00181210": "ConvolutionKernel",
    "00185100": "PatientPosition",
    "00280004": "PhotometricInterpretation",
    "00280010": "Rows",
    "00280011": "Columns",
    "00280030": "PixelSpacing",
    "00280100": "BitsAllocated",
    "00280101": "BitsStored",
    "00281052": "RescaleIntercept",
    "00281053": "RescaleSlope",
    "00281054": "RescaleType",
    "00120062": "PatientIdentityRemoved",
    "00120063": "DeidentificationMethod",
}

#: value representations shown (never PN, UI, DA, TM, DT, free text or sequences)
_SHOWN_VR = frozenset({"CS", "LO", "SH", "AS", "DS", "IS", "US", "SS", "FD", "FL", "UL", "SL"})

#: catalog fields added to the summary (derived at ingest, already in the index)
_ROW_FIELDS = ("age_years", "slice_thickness", "tilt_deg", "regularly_spaced", "source_format")

_MAX_TEXT = 128


def _value(element: Any) -> Any:
    if not isinstance(element, Mapping) or element.get("vr") not in _SHOWN_VR:
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values:
        return None
    clean = [
        v if isinstance(v, int | float) and not isinstance(v, bool) else str(v)[:_MAX_TEXT]
        for v in values
        if isinstance(v, str | int | float)
    ]
    if not clean:
        return None
    return clean[0] if len(clean) == 1 else clean


def header_summary(dicom: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of a stored de-identified header and the series' catalog row.

    Parameters
    ----------
    dicom
        The image's ``atlas.dicom`` attribute (DICOM JSON), or ``None`` (non-DICOM sources).
    row
        The series' catalog row.
    """
    out: dict[str, Any] = {}
    if isinstance(dicom, Mapping):
        for tag, keyword in SUMMARY_TAGS.items():
            value = _value(dicom.get(tag))
            if value is not None:
                out[keyword] = value
    for name in _ROW_FIELDS:
        if row.get(name) is not None:
            out[name] = row[name]
    return out
