"""Descriptor cleaning: the one rule for free text, in headers and label names alike.

Clean Descriptors rule (:func:`clean_text`)
-------------------------------------------
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

Coded entries (:func:`clean_code_meaning`, :func:`clean_code`)
--------------------------------------------------------------
A Code Meaning becomes the standard's meaning of its code when the code is known
(:mod:`atlas.privacy.codes`), else it is cleaned like a descriptor, else dropped. A label's code
is kept when its (scheme, value) is a concept of the standard's code dictionaries, with the
standard's meaning; a SNOMED CT code not in those dictionaries is kept when its value is a
well-formed SCTID (Verhoeff check digit), its typed meaning cleaned or dropped; any other code is
dropped, because its value could be anything.

Label names (:func:`clean_name`, decision 0013)
-----------------------------------------------
Control characters are removed (:func:`atlas.privacy.safe_text.printable`), then
:func:`clean_text` applies: a name made of known words (``Liver``, ``GTV``, ``PTV 70GY``) is kept
as it is; a name where only some words are known keeps those words (``tumour of patient 123456``
-> ``tumour of patient``); a name with no known word left except numbers and function words
(``of``, ``the``, ``L``) becomes the neutral name ``<kind>-<value>`` (:func:`neutral_name`:
``roi-3``, ``segment-2``, ``label-1``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from atlas.privacy.codes import is_sctid, standard_meaning
from atlas.privacy.safe_text import printable

__all__ = [
    "SAFE_WORDS",
    "clean_code",
    "clean_code_meaning",
    "clean_name",
    "clean_text",
    "neutral_name",
]


def _words(text: str) -> list[str]:
    return text.split()


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


def clean_code_meaning(scheme: str, value: str, meaning: str) -> str | None:
    """The Code Meaning to keep for a coded entry, or ``None`` to drop it.

    The standard's meaning when ``(scheme, value)`` is a code we know
    (:func:`atlas.privacy.codes.standard_meaning`); otherwise ``meaning`` is free text and goes
    through :func:`clean_text` (control characters removed first).
    """
    known = standard_meaning(scheme, value)
    if known is not None:
        return known
    text = printable(str(meaning or "")).strip()
    if not text:
        return None
    cleaned = clean_text(text)
    return cleaned.strip() if cleaned and cleaned.strip() else None


# ---------------------------------------------------------------------------------------------
# Label names and codes.

_NEUTRAL_PREFIX = {"SEG": "segment", "RTSTRUCT": "roi", "NIFTI": "label"}
#: vocabulary words that name nothing on their own ("John of" must not become "of")
_FUNCTION_WORDS = frozenset(
    {"A", "AND", "AT", "BY", "FOR", "FROM", "IN", "NO", "NON", "NOT", "OF", "ON", "OR", "OVER",
     "PER", "THE", "TO", "UNDER", "VIA", "WITH", "WITHOUT", "W", "WO", "C", "L", "R"}
)  # fmt: skip


def _meaningful(token: str) -> bool:
    return any(ch.isalpha() for ch in token) and token not in _FUNCTION_WORDS


def neutral_name(source: str, value: int) -> str:
    """The name a label gets when its own name cannot be kept (``roi-3``)."""
    return f"{_NEUTRAL_PREFIX.get(source.upper(), 'label')}-{int(value)}"


def clean_name(text: Any, neutral: str) -> tuple[str, bool]:
    """``(name to keep, whether it differs from text)`` for one label name (module rules)."""
    raw = "" if text is None else str(text)
    safe = " ".join(printable(raw).split())
    if not safe:
        return neutral, bool(raw.strip())
    cleaned = clean_text(safe)
    if cleaned is None or not any(_meaningful(t) for t in cleaned.upper().split()):
        return neutral, True
    cleaned = " ".join(cleaned.split())
    return cleaned, cleaned != raw


def clean_code(code: Mapping[str, Any] | None) -> tuple[dict[str, str] | None, list[str]]:
    """``(code to keep or None, what was changed)`` for one ``{scheme, value, meaning}``."""
    if not code:
        return None, []
    scheme = " ".join(printable(str(code.get("scheme") or "")).split())
    value = " ".join(printable(str(code.get("value") or "")).split())
    typed = str(code.get("meaning") or "")
    if not scheme or not value:
        return None, ["code"]
    known = standard_meaning(scheme, value)
    if known is None and not (scheme == "SCT" and is_sctid(value)):
        return None, ["code"]
    meaning = known if known is not None else clean_code_meaning(scheme, value, typed)
    kept = {"scheme": scheme, "value": value}
    if meaning is not None:
        kept["meaning"] = meaning
    changed = [] if meaning == typed else ["code_meaning"]
    if scheme != str(code.get("scheme") or "") or value != str(code.get("value") or ""):
        changed.insert(0, "code")
    return kept, changed
