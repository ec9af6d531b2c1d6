"""The JSON header Atlas stores beside an image: a de-identified data set, without bulk data."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput
from atlas.privacy.elements import BINARY_VRS

if TYPE_CHECKING:  # pydicom is imported lazily (ingest extra)
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

__all__ = ["header_json"]

#: attributes :func:`header_json` drops as bulk data (plus any binary value over 64 KiB)
_BULK_TAGS = frozenset(
    {
        0x7FE00010,  # Pixel Data
        0x7FE00008,  # Float Pixel Data
        0x7FE00009,  # Double Float Pixel Data
        0x54001010,  # Waveform Data
        0x00420011,  # Encapsulated Document
    }
)
_BULK_BINARY_LIMIT = 64 * 1024


def _is_bulk(elem: DataElement) -> bool:
    tag = int(elem.tag)
    if tag in _BULK_TAGS or tag & 0xFF00FFFF == 0x60003000:
        return True
    if elem.VR in BINARY_VRS:
        value = elem.value
        return isinstance(value, bytes | bytearray) and len(value) > _BULK_BINARY_LIMIT
    return False


def _without_bulk(ds: Dataset) -> Dataset:
    from pydicom import Dataset
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence

    out = Dataset()
    for tag in list(ds.keys()):
        elem = ds[tag]
        if _is_bulk(elem):
            continue
        if elem.VR == "SQ":
            items = [_without_bulk(item) for item in elem.value or ()]
            out.add(DataElement(elem.tag, "SQ", Sequence(items)))
        else:
            out.add(elem)
    return out


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def header_json(ds: Dataset) -> dict[str, Any]:
    """The DICOM JSON model (PS3.18 F) of a **de-identified** data set, without bulk data.

    Pixel Data (all three kinds), Overlay Data, Waveform Data, Encapsulated Document and any
    other binary value over 64 KiB are dropped (in sequences too); attributes whose value cannot
    be serialised are left out and non-finite floats become ``null``, so the result always
    passes ``json.dumps``. Raises :class:`InvalidInput` unless Patient Identity Removed is
    ``YES`` (i.e. the data set came from :meth:`Deidentifier.deidentify`).
    """
    if str(ds.get("PatientIdentityRemoved", "") or "").strip().upper() != "YES":
        raise InvalidInput(
            "header_json() only serialises de-identified data sets "
            "(Patient Identity Removed is not YES); call Deidentifier.deidentify() first"
        )
    result = _without_bulk(ds).to_json_dict(suppress_invalid_tags=True)
    cleaned: dict[str, Any] = _finite(result)
    return cleaned
