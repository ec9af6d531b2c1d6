"""DICOM de-identification by construction (DICOM PS3.15 Annex E).

What it does
------------
:class:`Deidentifier` applies the *Basic Application Level Confidentiality Profile* (every
attribute of PS3.15 Table E.1-1 with its action D, Z, X, K, C, U or a combination) plus three
options of that table, and returns a **new** dataset; the input is never modified:

* **Retain Longitudinal Temporal Information with Modified Dates** (``retain_dates``):
  every date is moved by a per-subject whole number of days, see *Date shift* below.
* **Retain Patient Characteristics** (``retain_patient_characteristics``): sex, age, size, weight,
  ethnic group, smoking and pregnancy status ... are kept (``K``), a few free-text patient
  attributes (allergies, patient state, pre-medication, special needs) are cleaned (``C``).
* **Clean Descriptors** (``clean_descriptors``): descriptive free text (Study/Series
  Description, Protocol Name, ROI Name, comments ...) is cleaned, see *Clean Descriptors* below.

All private attributes (odd groups, private creators included) are removed. Patient ID and
Patient Name become the keyed pseudonym :meth:`Deidentifier.subject_id`; every UID is mapped
with :meth:`Deidentifier.uid` (also inside sequences, so SEG/RTSTRUCT references stay
consistent with the mapped series); Patient Identity Removed, De-identification Method (+ Code
Sequence, CID 7050) and Longitudinal Temporal Information Modified are set.

Where the table comes from (the choice)
---------------------------------------
The **basic profile column** is read, lazily and once, from the maintained ``dicom-anonymizer``
package (BSD, depends only on pydicom), which ships Table E.1-1 as tag lists per action and per
edition of the standard (``dicomanonymizer.dicomfields_selector``). We use its newest edition,
**2026c** (655 attributes). We checked its 2024b edition against the machine-readable 2024b table
of ``innolitics/dicom-standard`` (generated from the standard's own XML): the same 620
attributes with the same actions. ``deid`` and ``dicognito`` were not taken: neither is
installed, ``deid`` ships its own recipe (a site policy, not the table column by column) and
``dicognito`` hard-codes its own attribute handling; both would add a dependency for less.

``dicom-anonymizer`` ships only the basic column, not the option columns, so those are
embedded here (they are short), transcribed from the 2024b edition (innolitics JSON):

* *Rtn. Long. Modif. Dates* is ``C`` for exactly the table's DA/DT/TM attributes except Patient's
  Birth Date, Patient's Birth Time and GPS Time Stamp, plus Timezone Offset From UTC (plus two
  OB timestamps that cannot be shifted, which keep their basic action). We encode it as that
  rule, which reproduces the 2024b column and also covers date attributes added since.
* *Rtn. Pat. Chars.* (13 attributes) and *Clean Desc.* (125 attributes) are listed below.
  Attributes added to the table after 2024b keep their basic action under every option
  (conservative), except Ethnic Group Code Sequence and Ethnic Groups, which we treat like
  Ethnic Group (``K`` under Retain Patient Characteristics).

Our own engine applies the actions, because we need the options and deterministic keyed mapping.

Action semantics (how combined actions are resolved)
----------------------------------------------------
``X`` remove; ``Z`` zero-length value (empty sequence); ``D`` dummy value of the VR (a UID is
mapped, a sequence becomes one empty item, dates are fixed dummies unless shifted); ``U`` mapped
UID; ``K`` keep; ``C`` clean (dates shifted, text cleaned, code sequences kept with their text
cleaned; a value that cannot be cleaned gets the basic action instead). Combined actions take
the least information the table allows: ``X/Z``, ``X/D`` and ``X/Z/D`` remove; ``Z/D`` gives a
zero-length value (a dummy for dates, since Content Date/Time are Type 1 in some IODs); ``X/Z/U*``
keeps a sequence and maps the UIDs in it (Source/Referenced Image Sequence carry the references
that labels need), is ``U`` on a UID and removes anything else. Actions apply in every item of
every sequence.

Beyond the table (so that nothing original survives)
----------------------------------------------------
Attributes the table does not list are kept, except: unknown (VR UN) attributes, command (0000)
and file-meta (0002) elements in the data set, whole overlay groups (60xx), person names (PN)
and dates/datetimes (DA/DT; shifted under the dates option) are removed; times (TM) are kept
only under the dates option; UIDs are mapped unless they are DICOM-defined
(``1.2.840.10008.*``) or name a class or coding scheme (SOP Class UID, Transfer Syntax UID,
Coding Scheme UID ...). File meta information is rebuilt from the de-identified data set.

Free text outside the table, per field (the policy table is in ``docs/ingest.md``, decision
0014): **Code Meaning**, in every item of every sequence, becomes the standard's meaning of
its code when the code is known (:mod:`atlas.ingest.codes`), else it is cleaned like a
descriptor, else removed (:func:`clean_code_meaning`); the code itself (Code Value, Coding
Scheme Designator and Version) is removed unless a public vocabulary defines its value
(:func:`atlas.ingest.codes.public_code`: not a private ``99...`` or local scheme, and a
well-formed SCTID for SNOMED CT); **Body Part Examined** is kept when it is a PS3.16 Annex L
defined term, else cleaned, else removed. Manufacturer, Manufacturer's
Model Name and Software Versions describe the device, not the patient, and are kept. No kept
text value carries a control character (:mod:`atlas.ingest.safe_text`; TAB, LF and CR survive
in ST, LT and UT only).

Pseudonyms and date shift
-------------------------
All derive from HMAC-SHA256 with the site secret ``key``, with a domain-separation prefix:
``subject_id`` = first 20 characters of the lower-case base32 digest (100 bits); ``uid`` =
``2.25.`` + the first 128 bits of the digest as a decimal integer (at most 44 characters);
**date shift** = ``-(365 + n mod 3286)`` days, ``n`` the first 64 bits of the digest of the
patient id, i.e. a whole number of days in **[-3650, -365]**: every date of a subject moves back
by the same 1-10 years (never forward, never zero), so intervals and weekdays mod 7 are kept;
the time of day and UTC offsets are kept; age attributes are durations and are never shifted
(Patient's Age is kept under Retain Patient Characteristics and removed otherwise, as the table
says).

Clean Descriptors rule
----------------------
A text value is split on white space and ``_,;:()[]{}^=|*#"'<>``. A token is *safe* when it has
no run of 4 or more digits and is (case-insensitively) a whitelisted clinical/technical word
(:data:`SAFE_WORDS`: anatomy, modality, sequence, contrast, RT structure words ...), a small
number with an optional unit (``5``, ``2.5MM``, ``120KV``, ``70GY``), a short code such as
``T1``, ``C3``, ``L4``, or a ``-``/``/``/``+``/``.`` compound of those with at most one numeric
part (``T1-POST``, ``W/O``, ``C+``). A bare number (no unit) is safe only when it is the value's
only one: several (``03 02 61``, ``123 456 789``) may together be a date or an id, like
``03/01``, so all of them go. If every token is safe the value is kept verbatim; if some
are, the safe tokens joined by single spaces replace it; if none is, the attribute gets its basic
profile action (X, Z or D). Names, ids, accession numbers and dates therefore never survive
unless a name is itself a whitelisted word.

Nothing here logs or raises with an original value or the key; ``repr`` hides the key.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from atlas.errors import ConfigError, InvalidInput
from atlas.ingest.safe_text import has_controls, printable

if TYPE_CHECKING:  # pydicom is imported lazily (ingest extra)
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

__all__ = [
    "DEFAULT_EDITION",
    "METHOD_CODES",
    "SAFE_WORDS",
    "Deidentifier",
    "ProfileTable",
    "basic_profile",
    "burned_in_risk",
    "clean_code_meaning",
    "clean_text",
    "header_json",
]

_log = logging.getLogger(__name__)

#: the edition of PS3.15 Table E.1-1 used unless another is asked for
DEFAULT_EDITION = "2026c"
#: shortest accepted site secret, in bytes
MIN_KEY_BYTES = 16
_EDITION = re.compile(r"\d{4}[a-e]?")
_SHIFT_MIN_DAYS = 365
_SHIFT_MAX_DAYS = 3650

#: CID 7050 codes (scheme DCM): the profile and the options we implement
METHOD_CODES: Mapping[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
}


def _words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------------------------
# Option columns of Table E.1-1 (PS3.15 2024b), see the module docstring.

#: Rtn. Pat. Chars. Opt. = K
_PATIENT_CHARS_KEEP = frozenset(
    {
        0x00100040,  # Patient's Sex
        0x00101010,  # Patient's Age
        0x00101020,  # Patient's Size
        0x00101030,  # Patient's Weight
        0x00102160,  # Ethnic Group
        0x001021A0,  # Smoking Status
        0x001021C0,  # Pregnancy Status
        0x00102203,  # Patient's Sex Neutered
        0x0072005F,  # Selector AS Value
        # newer than 2024b, treated like Ethnic Group (our choice, see docstring)
        0x00102161,  # Ethnic Group Code Sequence
        0x00102162,  # Ethnic Groups
    }
)
#: Rtn. Pat. Chars. Opt. = C
_PATIENT_CHARS_CLEAN = frozenset(
    {
        0x00102110,  # Allergies
        0x00380050,  # Special Needs
        0x00380500,  # Patient State
        0x00400012,  # Pre-Medication
    }
)
#: Clean Desc. Opt. = C (125 attributes)
_CLEAN_DESCRIPTORS = frozenset(
    int(t, 16)
    for t in _words(
        """
    00081030 0008103E 00081080 00081084 00081088 00082111 00084000 00102000
    00102110 00102180 001021B0 00104000 00120051 00120072 0016002B 0016004B
    00180010 00181030 001811BB 00181400 00184000 00189185 0018937B 0018937F
    00189424 00189937 0018A003 00200027 00204000 00209158 00321030 00321060
    00321066 00321067 00321070 00324000 00380040 00380062 00380500 00384000
    003A0329 003A032B 00400007 00400254 00400275 00400280 00400310 0040051A
    00400600 00400602 00401002 0040100A 00401400 00402001 00402400 00500021
    006A0005 006A0006 00720066 00720068 0072006C 0072006E 00720070 04000565
    22000002 30020121 30020123 30060002 30060004 30060006 30060026 30060028
    30060038 30060085 30060088 300A0002 300A0003 300A0004 300A000B 300A000E
    300A0016 300A0072 300A00C3 300A00DD 300A0196 300A01A6 300A01B2 300A02EB
    300A0608 300A0619 300A0623 300A062A 300A0676 300A067C 300A067D 300A0734
    300A0742 300A0783 300A078E 300A0792 300A0794 300A079A 300C0113 3010000F
    30100017 30100033 30100034 30100035 30100036 30100037 30100038 30100054
    30100056 3010005A 3010005C 30100061 30100077 3010007A 3010007B 3010007F
    30100081 4008010B 40080115 40080300 40084000
    """
    )
)
#: date attributes that the Modified Dates option does NOT retain
_DATES_NOT_RETAINED = frozenset(
    {
        0x00100030,  # Patient's Birth Date
        0x00100032,  # Patient's Birth Time
        0x00160077,  # GPS Time Stamp
    }
)
_TIMEZONE_OFFSET = 0x00080201

# ---------------------------------------------------------------------------------------------
# Tags with special handling.

_PATIENT_ID = 0x00100020
_SOP_CLASS_UID = 0x00080016
_SOP_INSTANCE_UID = 0x00080018
#: coded-entry attributes kept verbatim inside cleaned sequences (public vocabularies)
_CODE_TAGS = frozenset(
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

_CODE_MEANING = 0x00080104
_CODE_VALUE_TAGS = (0x00080100, 0x00080119, 0x00080120)  # Code / Long Code / URN Code Value
_CODING_SCHEME = 0x00080102
_CODING_SCHEME_VERSION = 0x00080103
_BODY_PART_EXAMINED = 0x00180015
#: text VRs whose values may span lines (TAB, LF, CR kept there)
_MULTILINE_VRS = frozenset({"ST", "LT", "UT"})

#: UI attributes whose value names a class, syntax or coding scheme, not an instance: kept
_CLASS_UID_KEYWORDS = frozenset(
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
_WELL_KNOWN_UID_ROOT = "1.2.840.10008."

_DATE_VRS = frozenset({"DA", "DT"})
_TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS"})
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: Mapping[str, str] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "urn:x-atlas:removed",
}

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

# ---------------------------------------------------------------------------------------------
# The profile table.


@dataclass(frozen=True)
class ProfileTable:
    """PS3.15 Table E.1-1, basic profile column, of one edition.

    ``exact`` maps a tag (``0xGGGGEEEE``) to its action (``"X"``, ``"Z/D"``, ``"X/Z/U*"`` ...);
    ``masked`` lists ``(group, element, group_mask, element_mask, action)`` for repeating
    groups such as curve data (50xx,xxxx) and overlays (60xx,3000).
    """

    edition: str
    exact: Mapping[int, str]
    masked: tuple[tuple[int, int, int, int, str], ...] = field(default=())

    def action(self, tag: int) -> str | None:
        """The basic profile action for ``tag``, or ``None`` when the table does not list it."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        group, element = tag >> 16, tag & 0xFFFF
        for g, e, gmask, emask, act in self.masked:
            if group & gmask == g and element & emask == e:
                return act
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.masked)


_CATEGORY_ACTIONS: Mapping[str, str] = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


@lru_cache(maxsize=4)
def basic_profile(edition: str = DEFAULT_EDITION) -> ProfileTable:
    """Load (once, then cached) Table E.1-1 of ``edition`` from ``dicom-anonymizer``.

    Raises :class:`ConfigError` when the package is missing or has no such edition.
    """
    if not _EDITION.fullmatch(edition):
        raise ConfigError(f"not a PS3.15 edition name: {edition!r} (e.g. {DEFAULT_EDITION!r})")
    try:
        from dicomanonymizer.dicomfields_selector import (
            dicom_anonymization_database_selector,
        )
    except ImportError as exc:
        raise ConfigError(
            "de-identification needs the 'dicom-anonymizer' package "
            "(pip install 'atlas-imaging[ingest]')"
        ) from exc
    try:
        categories = dicom_anonymization_database_selector(f"dicomfields_{edition}")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(
            f"dicom-anonymizer has no PS3.15 Table E.1-1 for edition {edition!r}"
        ) from exc
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in _CATEGORY_ACTIONS.items():
        for entry in categories.get(category, ()):
            if len(entry) == 2:
                exact[(entry[0] << 16) | entry[1]] = action
            elif len(entry) == 4:
                g, e, gmask, emask = entry
                masked.append((g & gmask, e & emask, gmask, emask, action))
            else:  # pragma: no cover - a format change in the package
                raise ConfigError(f"unexpected entry in dicom-anonymizer table {edition!r}")
    if not exact:  # pragma: no cover - a format change in the package
        raise ConfigError(f"dicom-anonymizer table {edition!r} is empty")
    return ProfileTable(edition=edition, exact=exact, masked=tuple(masked))


# ---------------------------------------------------------------------------------------------
# Clean Descriptors.

#: words a descriptor may contain and keep (compared upper-case)
SAFE_WORDS: frozenset[str] = frozenset(
    _words(
        """
    A AND AT BY FOR FROM IN NO NON NOT OF ON OR OVER PER THE TO UNDER VIA WITH WITHOUT W WO C
    L R LT RT LEFT RIGHT BILAT BILATERAL MIDLINE UPPER LOWER ANTERIOR POSTERIOR ANT POST PRE
    SUPERIOR INFERIOR MEDIAL LATERAL LAT PROXIMAL DISTAL AP PA AXIAL AX CORONAL COR SAGITTAL SAG
    OBLIQUE OBL TRANSVERSE TRA TRANS 2D 3D 4D
    CT MR MRI PT PET SPECT NM US CR DX MG XA RF OT SC SEG RTSTRUCT RTSS RTPLAN RTDOSE RT SR KO
    PR REG TOMO CBCT CTA MRA PETCT SCAN SCANS EXAM STUDY SERIES IMAGE IMAGES SLICE SLICES
    ROUTINE STANDARD PROTOCOL SCREENING DIAGNOSTIC STAGING RESTAGING FOLLOW UP FOLLOWUP FU
    BASELINE SURVEILLANCE PLANNING SIMULATION SIM TREATMENT THERAPY RADIOTHERAPY RADIATION
    CONTRAST NONCONTRAST ENHANCED UNENHANCED NATIVE NC CE IV ORAL GAD GD GADO GADOLINIUM IODINE
    BOLUS ARTERIAL VENOUS PORTAL PORTALVENOUS DELAYED LATE EARLY PHASE PHASES DYNAMIC PERFUSION
    MULTIPHASE BIPHASIC TRIPHASIC HEPATIC NEPHROGRAPHIC EXCRETORY
    T1 T2 T1W T2W PD FLAIR DWI ADC DTI SWI STIR TIRM GRE SE FSE TSE EPI SPGR MPRAGE FIESTA
    TRUFI VIBE LAVA THRIVE DIXON FAT SAT FS WATER INPHASE OPPOSED OUTPHASE IP OP BOLD DCE DSC
    TOF HASTE SSFSE BLADE PROPELLER CINE SPIN ECHO GRADIENT INVERSION RECOVERY DIFFUSION
    WEIGHTED MAP MAPS TRACE FIELD
    LOCALIZER LOCALISER SCOUT SURVEY TOPOGRAM SURVIEW PILOT TRIPILOT CAL CALIBRATION
    RECON RECONSTRUCTION MPR MIP MINIP VR VRT VOLUME VOL HELICAL SPIRAL SEQUENTIAL THIN THICK
    HIGH LOW RES RESOLUTION HR HD SHARP SMOOTH SOFT KERNEL FILTER ITERATIVE DOSE LD LDCT ULD
    WINDOW LUNG LUNGS BONE BONES TISSUE MEDIASTINUM MEDIASTINAL BRAIN STROKE ANGIO ANGIOGRAPHY
    DERIVED PRIMARY SECONDARY ORIGINAL AXIALS REFORMAT REFORMATS MULTIPLANAR SUB SUBTRACTION
    UNCOMPRESSED COMPRESSED MOCO CORRECTED NORM ATTENUATION AC NAC CTAC FDG PSMA GA68 F18
    WHOLE BODY WB TOTAL PARTIAL LIMITED HEAD NECK HN FACE SINUS SINUSES ORBIT ORBITS SKULL
    CHEST THORAX THORACIC ABDOMEN ABD ABDOMINAL PELVIS PELVIC CAP SPINE CERVICAL LUMBAR
    SACRUM SACRAL COCCYX EXTREMITY EXTREMITIES ARM LEG KNEE HIP SHOULDER ELBOW WRIST HAND ANKLE
    FOOT LIVER HEPATIC KIDNEY KIDNEYS RENAL PANCREAS PANCREATIC SPLEEN GALLBLADDER ADRENAL
    PROSTATE BREAST BREASTS HEART CARDIAC CORONARY AORTA AORTIC ESOPHAGUS OESOPHAGUS STOMACH
    BOWEL COLON RECTUM RECTAL BLADDER UTERUS CERVIX OVARY OVARIES TESTIS THYROID PAROTID
    PAROTIDS SUBMANDIBULAR LARYNX PHARYNX ORAL CAVITY TONGUE MANDIBLE EYE EYES GLOBE LENS
    OPTIC NERVE NERVES CHIASM BRAINSTEM CEREBELLUM COCHLEA CORD SPINAL SPINALCORD CANAL
    FEMUR FEMORAL HEAD HUMERUS RIB RIBS VERTEBRA VERTEBRAE LYMPH NODE NODES NODAL VESSEL
    VESSELS ARTERY VEIN TRACHEA BRONCHUS BRONCHI SKIN EXTERNAL OUTLINE CONTOUR COUCH TABLE
    TUMOR TUMOUR TUMORS TUMOURS CANCER CARCINOMA LESION LESIONS MASS MASSES NODULE NODULES
    METASTASIS METASTASES METS PRIMARY RECURRENCE NECROSIS EDEMA OEDEMA CYST BENIGN MALIGNANT
    NORMAL ABNORMAL SUSPICIOUS GTV CTV ITV PTV OAR OARS BOOST ISOCENTER ISOCENTRE BEAM BEAMS
    FIELD MARKER MARKERS FIDUCIAL FIDUCIALS STRUCTURE STRUCTURES SET PLAN PLANS ROI ROIS
    SEGMENTATION SEGMENTATIONS SEGMENT SEGMENTS MASK MASKS LABEL LABELS ANNOTATION ANNOTATIONS
    AUTO AUTOMATIC MANUAL SEMIAUTOMATIC AI MODEL ALGORITHM REVIEWED APPROVED DRAFT
    PATIENT ORGAN ORGANS RISK REGION AREA TARGET TARGETS TOTAL ALL OTHER NONE UNKNOWN
    CONTROL TEST PHANTOM QA WATER AIR MEDIUM LARGE SMALL
    """
    )
)
_SEPARATORS = re.compile(r"[\s_,;:()\[\]{}^=|*#\"'<>]+")
_COMPOUND = re.compile(r"[-/+.&]")
_FOUR_DIGITS = re.compile(r"\d{4}")
_NUMBER = re.compile(
    r"[+-]?\d{1,3}(?:\.\d{1,3})?"
    r"(?:MM|CM|M|MS|S|SEC|MIN|H|KV|KVP|MA|MAS|ML|MG|MBQ|MCI|T|HZ|DEG|X|GY|CGY|%)?"
)
_SHORT_CODE = re.compile(r"(?:T|C|L|S|TH|D|B|P|N|F|K|V|G)\d{1,3}[A-Z]?")
#: a number without a unit: one alone is kept, several together could be a date or an id
_BARE_NUMBER = re.compile(r"[+-]?\d{1,3}(?:\.\d{1,3})?")


def _safe_part(part: str) -> bool:
    return (
        part in SAFE_WORDS
        or _NUMBER.fullmatch(part) is not None
        or _SHORT_CODE.fullmatch(part) is not None
    )


def _safe_token(token: str) -> bool:
    upper = token.upper()
    if _FOUR_DIGITS.search(upper):
        return False
    if _safe_part(upper):
        return True
    parts = [p for p in _COMPOUND.split(upper) if p]
    if not parts:  # punctuation only, e.g. "-" or "+"
        return True
    if len(parts) == 1 and parts[0] == upper:
        return False
    if sum(p.isdigit() for p in parts) > 1:  # "03/01", "5.2.1": could be a date or an id
        return False
    return all(_safe_part(p) for p in parts)


def clean_text(value: str) -> str | None:
    """Clean one descriptor value (the Clean Descriptors rule of the module docstring).

    Returns the value itself when every token is safe, the safe tokens joined by single spaces
    when only some are, and ``None`` when none is (the caller then removes or replaces it).
    """
    tokens = [t for t in _SEPARATORS.split(value) if t]
    if not tokens:
        return value
    safe = [t for t in tokens if _safe_token(t)]
    if sum(_BARE_NUMBER.fullmatch(t) is not None for t in safe) > 1:  # "03 02 61"
        safe = [t for t in safe if _BARE_NUMBER.fullmatch(t) is None]
    if len(safe) == len(tokens):
        return value
    if not any(ch.isalnum() for t in safe for ch in t):
        return None
    return " ".join(safe)


# ---------------------------------------------------------------------------------------------
# Dates.

_DATE_PART = re.compile(r"(\d{4})(\d{2})?(\d{2})?")
_LEGACY_DA = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")
_DT_REST = re.compile(r"(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?(?:[+-]\d{4})?")
_TM = re.compile(r"\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?|\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")
_TZ_OFFSET = re.compile(r"[+-](?:0\d|1[0-4])[0-5]\d")


def _shift_value(value: str, days: int) -> str:
    """Shift a DA or DT value by ``days``, keeping its precision, time of day and UTC offset."""
    text = value.strip()
    legacy = _LEGACY_DA.fullmatch(text)
    if legacy:
        text = "".join(legacy.groups())
    head = _DATE_PART.match(text)
    if head is None:
        raise InvalidInput("not a DICOM DA/DT value")
    year_s, month_s, day_s = head.groups()
    rest = text[head.end() :]
    if (month_s is None and day_s is None and rest) or (day_s is None and rest):
        raise InvalidInput("not a DICOM DA/DT value")
    if _DT_REST.fullmatch(rest) is None:
        raise InvalidInput("not a DICOM DA/DT value")
    try:
        # a partial date is shifted from the middle of its period, then cut back to precision
        start = date(int(year_s), int(month_s or 7), int(day_s or (15 if month_s else 2)))
        moved = start + timedelta(days=days)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput("DICOM DA/DT value out of range or invalid") from exc
    if moved.year < 1:  # pragma: no cover - date() already refuses year 0
        raise InvalidInput("shifted date before year 1")
    out = f"{moved.year:04d}"
    if month_s is not None:
        out += f"{moved.month:02d}"
    if day_s is not None:
        out += f"{moved.day:02d}"
    return out + rest


# ---------------------------------------------------------------------------------------------
# The engine.


@dataclass
class _Context:
    """State of one :meth:`Deidentifier.deidentify` call (no original values are logged)."""

    shift_days: int
    removed: int = 0
    uids: int = 0
    cleaned: int = 0


class Deidentifier:
    """De-identify DICOM data sets with keyed, deterministic pseudonyms (PS3.15 Annex E).

    ``key`` is the site secret (at least 16 bytes). It is kept only in memory and never
    printed: ``repr`` hides it. The three option flags switch the Table E.1-1 options on
    (default) or off: ``retain_dates`` is *Retain Longitudinal Temporal Information with
    Modified Dates* (dates are shifted, never kept as they were),
    ``retain_patient_characteristics`` and ``clean_descriptors`` the options of those names;
    ``edition`` picks the edition of the table (see :func:`basic_profile`).
    """

    __slots__ = (
        "_key",
        "clean_descriptors",
        "edition",
        "retain_dates",
        "retain_patient_characteristics",
    )

    def __init__(
        self,
        key: bytes,
        *,
        retain_dates: bool = True,
        retain_patient_characteristics: bool = True,
        clean_descriptors: bool = True,
        edition: str = DEFAULT_EDITION,
    ) -> None:
        if not isinstance(key, bytes | bytearray | memoryview):
            raise InvalidInput("the site secret must be bytes")
        key = bytes(key)
        if len(key) < MIN_KEY_BYTES:
            raise InvalidInput(f"the site secret must be at least {MIN_KEY_BYTES} bytes long")
        self._key = key
        self.retain_dates = bool(retain_dates)
        self.retain_patient_characteristics = bool(retain_patient_characteristics)
        self.clean_descriptors = bool(clean_descriptors)
        if not isinstance(edition, str) or not _EDITION.fullmatch(edition):
            raise ConfigError(f"not a PS3.15 edition name: {edition!r} (e.g. {DEFAULT_EDITION!r})")
        self.edition = edition

    @classmethod
    def from_env(
        cls,
        var: str = "ATLAS_SITE_SECRET",
        *,
        environ: Mapping[str, str] | None = None,
        retain_dates: bool = True,
        retain_patient_characteristics: bool = True,
        clean_descriptors: bool = True,
        edition: str = DEFAULT_EDITION,
    ) -> Deidentifier:
        """Read the site secret from the environment variable ``var`` (UTF-8 bytes).

        Raises :class:`ConfigError` naming the variable (never its value) when it is unset,
        empty or shorter than 16 bytes. ``environ`` replaces ``os.environ`` (tests).
        """
        env = os.environ if environ is None else environ
        raw = env.get(var)
        if not raw:
            raise ConfigError(
                f"environment variable {var} is not set: it must hold the site secret "
                f"(at least {MIN_KEY_BYTES} bytes) used to derive pseudonyms"
            )
        key = raw.encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"environment variable {var} is too short: the site secret must be at least "
                f"{MIN_KEY_BYTES} bytes long"
            )
        return cls(
            key,
            retain_dates=retain_dates,
            retain_patient_characteristics=retain_patient_characteristics,
            clean_descriptors=clean_descriptors,
            edition=edition,
        )

    def __repr__(self) -> str:
        return (
            f"Deidentifier(key=<hidden>, edition={self.edition!r}, "
            f"retain_dates={self.retain_dates}, "
            f"retain_patient_characteristics={self.retain_patient_characteristics}, "
            f"clean_descriptors={self.clean_descriptors})"
        )

    # -- keyed values ---------------------------------------------------------------------------

    def _digest(self, domain: bytes, value: str) -> bytes:
        return hmac.new(
            self._key, domain + b"\x00" + value.encode("utf-8"), hashlib.sha256
        ).digest()

    def subject_id(self, patient_id: str) -> str:
        """The pseudonymous subject id of ``patient_id``: 20 lower-case base32 characters."""
        digest = self._digest(b"atlas/subject", str(patient_id).strip())
        return base64.b32encode(digest).decode("ascii")[:20].lower()

    def uid(self, original_uid: str) -> str:
        """The deterministic replacement of ``original_uid``: ``2.25.<int>`` (at most 44 chars)."""
        digest = self._digest(b"atlas/uid", str(original_uid).strip().rstrip("\x00"))
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def date_shift_days(self, patient_id: str) -> int:
        """Days every date of ``patient_id`` moves by: an integer in [-3650, -365]."""
        digest = self._digest(b"atlas/date-shift", str(patient_id).strip())
        span = _SHIFT_MAX_DAYS - _SHIFT_MIN_DAYS + 1
        return -(_SHIFT_MIN_DAYS + int.from_bytes(digest[:8], "big") % span)

    def shift_date(self, value: str, patient_id: str) -> str:
        """Shift a DA (``YYYYMMDD``) or DT value by the subject's offset, keeping it valid.

        The precision, the time of day and any UTC offset are kept. Raises
        :class:`InvalidInput` (without the value) when ``value`` is not a DA/DT value.
        """
        return _shift_value(value, self.date_shift_days(patient_id))

    # -- data sets ------------------------------------------------------------------------------

    def deidentify(self, ds: Dataset, *, patient_id: str | None = None) -> Dataset:
        """A de-identified copy of ``ds`` (``ds`` itself is not modified).

        ``patient_id`` is the original patient identifier the pseudonym and the date shift
        derive from; it defaults to the data set's Patient ID. Raises :class:`InvalidInput` when
        there is neither.
        """
        from pydicom import Dataset
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

        if not isinstance(ds, Dataset):
            raise InvalidInput("deidentify() needs a pydicom Dataset")
        subject_key = patient_id if patient_id is not None else _text_of(ds.get(_PATIENT_ID))
        if not subject_key or not str(subject_key).strip():
            raise InvalidInput(
                "cannot de-identify: the data set has no Patient ID; pass patient_id="
            )
        subject_key = str(subject_key)
        table = basic_profile(self.edition)
        ctx = _Context(shift_days=self.date_shift_days(subject_key))
        out = self._dataset(ds, table, ctx, clean_items=False)

        subject = self.subject_id(subject_key)
        out.PatientID = subject
        out.PatientName = subject
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = f"PS3.15 E.1-1 {table.edition} (atlas)"
        out.DeidentificationMethodCodeSequence = [
            _code_item(value, meaning) for value, meaning in self._method_codes()
        ]
        out.LongitudinalTemporalInformationModified = "MODIFIED" if self.retain_dates else "REMOVED"

        meta = FileMetaDataset()
        old_meta = getattr(ds, "file_meta", None)
        if _SOP_CLASS_UID in out:
            meta.MediaStorageSOPClassUID = out[_SOP_CLASS_UID].value
        if _SOP_INSTANCE_UID in out:
            meta.MediaStorageSOPInstanceUID = out[_SOP_INSTANCE_UID].value
        elif old_meta is not None and "MediaStorageSOPInstanceUID" in old_meta:
            meta.MediaStorageSOPInstanceUID = UID(self.uid(old_meta.MediaStorageSOPInstanceUID))
        syntax: Any = old_meta.get("TransferSyntaxUID") if old_meta is not None else None
        meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        out.file_meta = meta
        _log.debug(
            "de-identified a data set: %d attributes removed, %d UIDs mapped, %d values cleaned",
            ctx.removed,
            ctx.uids,
            ctx.cleaned,
        )
        return out

    def _method_codes(self) -> list[tuple[str, str]]:
        names = ["basic"]
        if self.clean_descriptors:
            names.append("clean_descriptors")
        if self.retain_dates:
            names.append("retain_dates")
        if self.retain_patient_characteristics:
            names.append("retain_patient_characteristics")
        return [METHOD_CODES[n] for n in names]

    def _dataset(
        self, ds: Dataset, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> Dataset:
        from pydicom import Dataset

        out = Dataset()
        for tag in list(ds.keys()):
            elem = ds[tag]
            new = self._element(elem, table, ctx, clean_items)
            if new is None:
                ctx.removed += 1
            else:
                out.add(new)
        if _CODE_MEANING in ds:
            _set_code_meaning(ds, out)
        return out

    def _element(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement | None:
        new = self._apply(elem, table, ctx, clean_items)
        return _printable_element(new) if new is not None else None

    def _apply(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement | None:
        tag = int(elem.tag)
        group = tag >> 16
        if group % 2 == 1 or group in (0x0000, 0x0002) or tag & 0xFFFF == 0:
            return None  # private (creators included), command, file meta, group lengths
        if 0x6000 <= group <= 0x60FF:
            return None  # overlays: data and comments are X; the rest is useless without them
        vr = elem.VR
        basic = table.action(tag)
        if basic is None:
            return self._unlisted(elem, table, ctx, clean_items)
        action = self._option_action(tag, vr, basic)
        if action == "K" and not _well_formed(elem):
            action = _resolve(basic, vr)  # a malformed coded value is no characteristic: basic
            ctx.cleaned += 1
        if action == "K":
            return self._keep(elem, table, ctx, clean_items)
        if action == "C":
            cleaned = self._clean(elem, table, ctx)
            if cleaned is not None:
                ctx.cleaned += 1
                return cleaned
        return self._basic(elem, _resolve(basic, vr), table, ctx, clean_items)

    def _option_action(self, tag: int, vr: str, basic: str) -> str:
        if self.retain_patient_characteristics:
            if tag in _PATIENT_CHARS_KEEP:
                return "K"
            if tag in _PATIENT_CHARS_CLEAN:
                return "C"
        if self.retain_dates and (
            (vr in _TEMPORAL_VRS and tag not in _DATES_NOT_RETAINED) or tag == _TIMEZONE_OFFSET
        ):
            return "C"
        if self.clean_descriptors and tag in _CLEAN_DESCRIPTORS:
            return "C"
        return basic

    def _keep(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement:
        if elem.VR == "SQ":
            return self._sequence(elem, table, ctx, clean_items)
        return copy.deepcopy(elem)

    def _sequence(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement:
        from pydicom.dataelem import DataElement
        from pydicom.sequence import Sequence

        items = [self._dataset(item, table, ctx, clean_items) for item in elem.value or ()]
        return DataElement(elem.tag, "SQ", Sequence(items))

    def _clean(self, elem: DataElement, table: ProfileTable, ctx: _Context) -> DataElement | None:
        """Apply a ``C`` action; ``None`` when the value cannot be cleaned (basic action then)."""
        vr = elem.VR
        tag = int(elem.tag)
        if vr == "SQ":
            return self._sequence(elem, table, ctx, clean_items=True)
        if vr in _DATE_VRS:
            return _map_values(elem, lambda v: _shift_value(v, ctx.shift_days))
        if vr == "TM":
            return _map_values(elem, _check_time)
        if tag == _TIMEZONE_OFFSET:
            return _map_values(elem, _check_timezone)
        if vr in _TEXT_VRS:
            return _clean_element(elem)
        return None  # binary or numeric values cannot be cleaned

    def _basic(
        self,
        elem: DataElement,
        action: str,
        table: ProfileTable,
        ctx: _Context,
        clean_items: bool,
    ) -> DataElement | None:
        from pydicom import Dataset
        from pydicom.dataelem import DataElement, empty_value_for_VR
        from pydicom.sequence import Sequence

        vr = elem.VR
        if action == "X":
            return None
        if action == "KEEP_SEQ":
            return self._sequence(elem, table, ctx, clean_items)
        if action == "U":
            if vr != "UI":
                return None
            return self._map_uids(elem, ctx)
        if action == "Z":
            if vr == "SQ":
                return DataElement(elem.tag, "SQ", Sequence())
            return DataElement(elem.tag, vr, empty_value_for_VR(vr))
        if action == "D":
            if vr == "SQ":
                return DataElement(elem.tag, "SQ", Sequence([Dataset()]))
            if vr == "UI":
                return self._map_uids(elem, ctx)
            dummy = _dummy_value(vr)
            if dummy is None:
                return None
            return DataElement(elem.tag, vr, dummy)
        return None  # pragma: no cover - _resolve only returns the actions above

    def _unlisted(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement | None:
        """An attribute Table E.1-1 does not list (see "Beyond the table")."""
        vr = elem.VR
        if vr == "UN" or vr == "PN":
            return None
        if vr == "SQ":
            return self._sequence(elem, table, ctx, clean_items)
        if vr == "UI":
            if elem.keyword in _CLASS_UID_KEYWORDS:
                return copy.deepcopy(elem)
            return self._map_uids(elem, ctx)
        if vr in _DATE_VRS:
            if not self.retain_dates:
                return None
            shifted = _map_values(elem, lambda v: _shift_value(v, ctx.shift_days))
            return shifted
        if vr == "TM":
            return _map_values(elem, _check_time) if self.retain_dates else None
        if int(elem.tag) == _BODY_PART_EXAMINED:
            return _clean_body_part(elem)
        if clean_items and vr in _TEXT_VRS and vr != "CS" and int(elem.tag) not in _CODE_TAGS:
            cleaned = _clean_element(elem)
            if cleaned is not None:
                ctx.cleaned += 1
            return cleaned
        return copy.deepcopy(elem)

    def _map_uids(self, elem: DataElement, ctx: _Context) -> DataElement:
        from pydicom.dataelem import DataElement

        def one(value: Any) -> str:
            text = str(value).strip().rstrip("\x00")
            if not text or text.startswith(_WELL_KNOWN_UID_ROOT):
                return text
            ctx.uids += 1
            return self.uid(text)

        values = _values(elem)
        mapped = [one(v) for v in values]
        if elem.VM > 1:
            return DataElement(elem.tag, "UI", mapped)
        return DataElement(elem.tag, "UI", mapped[0] if mapped else elem.value)


def _resolve(basic: str, vr: str) -> str:
    """One of X, Z, D, U or KEEP_SEQ for a (possibly combined) basic profile action."""
    if basic in ("X", "Z", "D", "U"):
        return basic
    if basic in ("X/Z", "X/D", "X/Z/D"):
        return "X"
    if basic == "Z/D":
        return "D" if vr in _TEMPORAL_VRS else "Z"
    if basic == "X/Z/U*":
        if vr == "SQ":
            return "KEEP_SEQ"
        return "U" if vr == "UI" else "X"
    return "X"  # an action we do not know: the safest


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if elem.VM > 1:
        return list(value)
    return [value]


def _text_of(elem: DataElement | None) -> str:
    if elem is None or elem.value is None:
        return ""
    return str(elem.value)


#: VRs with a strict form: a kept value not of that form may be anything (a name, an id)
_STRICT_VRS = frozenset({"AS", "CS", "DS", "IS", "DA", "DT", "TM"})


def _well_formed(elem: DataElement) -> bool:
    """Every value of ``elem`` has its VR's form (checked without pydicom's warnings)."""
    from pydicom.valuerep import VALIDATORS

    if elem.VR not in _STRICT_VRS:
        return True
    return all(VALIDATORS[elem.VR](elem.VR, str(v))[0] for v in _values(elem))


def _map_values(elem: DataElement, fn: Any) -> DataElement | None:
    """``elem`` with ``fn`` applied to each value; ``None`` when any value is refused."""
    from pydicom.dataelem import DataElement

    values = _values(elem)
    try:
        mapped = [fn(str(v)) for v in values]
    except InvalidInput:
        return None
    if not mapped:
        return DataElement(elem.tag, elem.VR, elem.value)
    return DataElement(elem.tag, elem.VR, mapped if len(mapped) > 1 else mapped[0])


def _check_time(value: str) -> str:
    if _TM.fullmatch(value.strip()) is None:
        raise InvalidInput("not a DICOM TM value")
    return value


def _check_timezone(value: str) -> str:
    if _TZ_OFFSET.fullmatch(value.strip()) is None:
        raise InvalidInput("not a UTC offset")
    return value


def _clean_element(elem: DataElement) -> DataElement | None:
    from pydicom.dataelem import DataElement

    values = _values(elem)
    if not values:
        return DataElement(elem.tag, elem.VR, elem.value)
    cleaned = [c for c in (clean_text(str(v)) for v in values) if c is not None]
    if not cleaned:
        return None
    return DataElement(elem.tag, elem.VR, cleaned if len(cleaned) > 1 else cleaned[0])


def clean_code_meaning(scheme: str, value: str, meaning: str) -> str | None:
    """The Code Meaning to keep for a coded entry, or ``None`` to drop it.

    The standard's meaning when ``(scheme, value)`` is a code we know
    (:func:`atlas.ingest.codes.standard_meaning`); otherwise ``meaning`` is free text and goes
    through :func:`clean_text` (control characters removed first).
    """
    from atlas.ingest.codes import standard_meaning

    known = standard_meaning(scheme, value)
    if known is not None:
        return known
    text = printable(str(meaning or "")).strip()
    if not text:
        return None
    cleaned = clean_text(text)
    return cleaned.strip() if cleaned and cleaned.strip() else None


def _first_text(ds: Dataset, tags: Iterable[int]) -> str:
    for tag in tags:
        if tag in ds:
            text = _text_of(ds[tag]).strip()
            if text:
                return text
    return ""


def _set_code_meaning(original: Dataset, out: Dataset) -> None:
    """Code Meaning of a de-identified code item from the original item's code; the code
    itself (value, scheme, version) is removed unless a public vocabulary defines its value."""
    from pydicom.dataelem import DataElement

    from atlas.ingest.codes import public_code

    scheme = _first_text(original, (_CODING_SCHEME,))
    value = _first_text(original, _CODE_VALUE_TAGS)
    meaning = clean_code_meaning(scheme, value, _text_of(original[_CODE_MEANING]))
    if not public_code(scheme, value):  # a private or local code: its value could be anything
        for tag in (*_CODE_VALUE_TAGS, _CODING_SCHEME, _CODING_SCHEME_VERSION):
            if tag in out:
                del out[tag]
    if meaning is None:
        if _CODE_MEANING in out:
            del out[_CODE_MEANING]
        return
    out[_CODE_MEANING] = DataElement(_CODE_MEANING, "LO", meaning)


def _clean_body_part(elem: DataElement) -> DataElement | None:
    """Body Part Examined: a PS3.16 Annex L defined term, else cleaned text, else removed."""
    from pydicom.dataelem import DataElement

    from atlas.ingest.codes import body_part_code

    text = printable(_text_of(elem)).strip()
    if not text:
        return DataElement(elem.tag, elem.VR, elem.value)
    if body_part_code(text) is not None:
        return DataElement(elem.tag, elem.VR, text.upper())
    cleaned = clean_text(text)
    if cleaned is None or not cleaned.strip():
        return None
    return DataElement(elem.tag, elem.VR, cleaned.strip().upper())


def _printable_element(elem: DataElement) -> DataElement:
    """``elem`` with control characters removed from its text values (see safe_text)."""
    from pydicom.dataelem import DataElement

    vr = elem.VR
    if vr not in _TEXT_VRS and vr not in ("AE", "AS", "PN", "UR"):
        return elem
    multiline = vr in _MULTILINE_VRS
    values = _values(elem)
    if not any(isinstance(v, str) and has_controls(v, multiline=multiline) for v in values):
        return elem
    fixed = [printable(v, multiline=multiline) if isinstance(v, str) else v for v in values]
    return DataElement(elem.tag, vr, fixed if len(fixed) > 1 else fixed[0])


def _dummy_value(vr: str) -> Any:
    if vr in _DUMMY_BY_VR:
        return _DUMMY_BY_VR[vr]
    if vr in ("AE", "CS", "SH", "LO", "ST", "LT", "UT", "UC", "PN"):
        return _DUMMY_TEXT
    if vr in _INT_VRS:
        return 0
    if vr in _FLOAT_VRS:
        return 0.0
    if vr in _BINARY_VRS:
        return b"\x00" * 8
    return None  # AT and anything unknown: removed


def _code_item(value: str, meaning: str) -> Dataset:
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


# ---------------------------------------------------------------------------------------------
# Burned-in text.


def burned_in_risk(ds: Dataset) -> str | None:
    """Why the pixels of ``ds`` may carry burned-in text, or ``None``.

    The rules (RSNA CTP's burned-in-pixels filters as packaged by the ``deid`` library: Burned
    In Annotation YES, known device signatures, and, unless Burned In Annotation is NO,
    Secondary Capture, ultrasound, screen saves and screen-capture devices) are those of
    :func:`atlas.ingest.burned_in.burned_in_reason`; a ``DERIVED\\SECONDARY`` MR or CT
    reconstruction is not a risk. The reason names no original value.
    """
    from atlas.ingest.burned_in import burned_in_reason

    return burned_in_reason(ds)


# ---------------------------------------------------------------------------------------------
# JSON header.


def _is_bulk(elem: DataElement) -> bool:
    tag = int(elem.tag)
    if tag in _BULK_TAGS or tag & 0xFF00FFFF == 0x60003000:
        return True
    if elem.VR in _BINARY_VRS:
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
