"""Element-level pieces of the engine: tags and VRs with special handling, value helpers.

Free text outside Table E.1-1, per field (decision 0014): **Code Meaning**, in every item of
every sequence, becomes the standard's meaning of its code when the code is known, else it is
cleaned like a descriptor, else removed (:func:`atlas.privacy.descriptors.clean_code_meaning`);
the code itself (Code Value, Coding Scheme Designator and Version) is removed unless a public
vocabulary defines its value (:func:`atlas.privacy.codes.public_code`: not a private ``99...``
or local scheme, and a well-formed SCTID for SNOMED CT) (:func:`set_code_meaning`); **Body Part
Examined** is kept when it is a PS3.16 Annex L defined term, else cleaned, else removed
(:func:`clean_body_part`). No kept text value carries a control character
(:func:`printable_element`, :mod:`atlas.privacy.safe_text`; TAB, LF and CR survive in ST, LT
and UT only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput
from atlas.privacy.codes import body_part_code, public_code
from atlas.privacy.descriptors import clean_code_meaning, clean_text
from atlas.privacy.safe_text import has_controls, printable

if TYPE_CHECKING:  # pydicom is imported lazily (ingest extra)
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

__all__ = [
    "BINARY_VRS",
    "BODY_PART_EXAMINED",
    "CLASS_UID_KEYWORDS",
    "CODE_MEANING",
    "CODE_TAGS",
    "CODE_VALUE_TAGS",
    "CODING_SCHEME",
    "CODING_SCHEME_VERSION",
    "DATE_VRS",
    "DUMMY_BY_VR",
    "DUMMY_TEXT",
    "FLOAT_VRS",
    "INT_VRS",
    "MULTILINE_VRS",
    "PATIENT_ID",
    "SOP_CLASS_UID",
    "SOP_INSTANCE_UID",
    "STRICT_VRS",
    "TEMPORAL_VRS",
    "TEXT_VRS",
    "TIMEZONE_OFFSET",
    "WELL_KNOWN_UID_ROOT",
    "clean_body_part",
    "clean_element",
    "code_item",
    "dummy_value",
    "element_values",
    "first_text",
    "map_values",
    "printable_element",
    "set_code_meaning",
    "text_of",
    "well_formed",
]

#: Timezone Offset From UTC
TIMEZONE_OFFSET = 0x00080201
PATIENT_ID = 0x00100020
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
#: coded-entry attributes kept verbatim inside cleaned sequences (public vocabularies)
CODE_TAGS = frozenset(
    {
        0x00080100,  # Code Value
        0x00080102,  # Coding Scheme Designator
        0x00080103,  # Coding Scheme Version
        0x00080105,  # Mapping Resource
        0x0008010F,  # Context Identifier
        0x00080119,  # Long Code Value
        0x00080120,  # URN Code Value
    }
)

CODE_MEANING = 0x00080104
CODE_VALUE_TAGS = (0x00080100, 0x00080119, 0x00080120)  # Code / Long Code / URN Code Value
CODING_SCHEME = 0x00080102
CODING_SCHEME_VERSION = 0x00080103
BODY_PART_EXAMINED = 0x00180015
#: text VRs whose values may span lines (TAB, LF, CR kept there)
MULTILINE_VRS = frozenset({"ST", "LT", "UT"})

#: UI attributes whose value names a class, syntax or coding scheme, not an instance: kept
CLASS_UID_KEYWORDS = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "AffectedSOPClassUID",
        "RequestedSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ReferencedSOPClassUIDInFile",
        "ReferencedRelatedGeneralSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "CodingSchemeUID",
        "MappingResourceUID",
        "ImplementationClassUID",
    }
)
WELL_KNOWN_UID_ROOT = "1.2.840.10008."

DATE_VRS = frozenset({"DA", "DT"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
FLOAT_VRS = frozenset({"FL", "FD"})
DUMMY_TEXT = "ANONYMIZED"
DUMMY_BY_VR: Mapping[str, str] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "urn:x-atlas:removed",
}


def element_values(elem: DataElement) -> list[Any]:
    """The values of ``elem`` as a list (empty when it has none, one item when VM is 1)."""
    value = elem.value
    if value is None or value == "":
        return []
    if elem.VM > 1:
        return list(value)
    return [value]


def text_of(elem: DataElement | None) -> str:
    """The value of ``elem`` as text (``""`` when absent or empty)."""
    if elem is None or elem.value is None:
        return ""
    return str(elem.value)


#: VRs with a strict form: a kept value not of that form may be anything (a name, an id)
STRICT_VRS = frozenset({"AS", "CS", "DS", "IS", "DA", "DT", "TM"})


def well_formed(elem: DataElement) -> bool:
    """Every value of ``elem`` has its VR's form (checked without pydicom's warnings)."""
    from pydicom.valuerep import VALIDATORS

    if elem.VR not in STRICT_VRS:
        return True
    return all(VALIDATORS[elem.VR](elem.VR, str(v))[0] for v in element_values(elem))


def map_values(elem: DataElement, fn: Any) -> DataElement | None:
    """``elem`` with ``fn`` applied to each value; ``None`` when any value is refused."""
    from pydicom.dataelem import DataElement

    values = element_values(elem)
    try:
        mapped = [fn(str(v)) for v in values]
    except InvalidInput:
        return None
    if not mapped:
        return DataElement(elem.tag, elem.VR, elem.value)
    return DataElement(elem.tag, elem.VR, mapped if len(mapped) > 1 else mapped[0])


def clean_element(elem: DataElement) -> DataElement | None:
    """``elem`` with each text value cleaned; ``None`` when no value survives the cleaning."""
    from pydicom.dataelem import DataElement

    values = element_values(elem)
    if not values:
        return DataElement(elem.tag, elem.VR, elem.value)
    cleaned = [c for c in (clean_text(str(v)) for v in values) if c is not None]
    if not cleaned:
        return None
    return DataElement(elem.tag, elem.VR, cleaned if len(cleaned) > 1 else cleaned[0])


def first_text(ds: Dataset, tags: Iterable[int]) -> str:
    """The first non-blank text among ``tags`` of ``ds`` (stripped), ``""`` when none."""
    for tag in tags:
        if tag in ds:
            text = text_of(ds[tag]).strip()
            if text:
                return text
    return ""


def set_code_meaning(original: Dataset, out: Dataset) -> None:
    """Set the Code Meaning of a de-identified code item from the original item's code.

    The code itself (value, scheme, version) is removed unless a public vocabulary defines its
    value.
    """
    from pydicom.dataelem import DataElement

    scheme = first_text(original, (CODING_SCHEME,))
    value = first_text(original, CODE_VALUE_TAGS)
    meaning = clean_code_meaning(scheme, value, text_of(original[CODE_MEANING]))
    if not public_code(scheme, value):  # a private or local code: its value could be anything
        for tag in (*CODE_VALUE_TAGS, CODING_SCHEME, CODING_SCHEME_VERSION):
            if tag in out:
                del out[tag]
    if meaning is None:
        if CODE_MEANING in out:
            del out[CODE_MEANING]
        return
    out[CODE_MEANING] = DataElement(CODE_MEANING, "LO", meaning)


def clean_body_part(elem: DataElement) -> DataElement | None:
    """Body Part Examined: a PS3.16 Annex L defined term, else cleaned text, else removed."""
    from pydicom.dataelem import DataElement

    text = printable(text_of(elem)).strip()
    if not text:
        return DataElement(elem.tag, elem.VR, elem.value)
    if body_part_code(text) is not None:
        return DataElement(elem.tag, elem.VR, text.upper())
    cleaned = clean_text(text)
    if cleaned is None or not cleaned.strip():
        return None
    return DataElement(elem.tag, elem.VR, cleaned.strip().upper())


def printable_element(elem: DataElement) -> DataElement:
    """``elem`` with control characters removed from its text values (see safe_text)."""
    from pydicom.dataelem import DataElement

    vr = elem.VR
    if vr not in TEXT_VRS and vr not in ("AE", "AS", "PN", "UR"):
        return elem
    multiline = vr in MULTILINE_VRS
    values = element_values(elem)
    if not any(isinstance(v, str) and has_controls(v, multiline=multiline) for v in values):
        return elem
    fixed = [printable(v, multiline=multiline) if isinstance(v, str) else v for v in values]
    return DataElement(elem.tag, vr, fixed if len(fixed) > 1 else fixed[0])


def dummy_value(vr: str) -> Any:
    """A dummy value of the form of ``vr``; ``None`` for AT and unknown VRs (removed)."""
    if vr in DUMMY_BY_VR:
        return DUMMY_BY_VR[vr]
    if vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "PN"):
        return DUMMY_TEXT
    if vr in INT_VRS:
        return 0
    if vr in FLOAT_VRS:
        return 0.0
    if vr in BINARY_VRS:
        return b"\x00" * 8
    return None  # AT and anything unknown: removed


def code_item(value: str, meaning: str) -> Dataset:
    """A code sequence item of the DCM scheme with ``value`` and ``meaning``."""
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
