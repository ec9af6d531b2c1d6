"""Coded concepts: the standard's own meaning of a code, from the libraries that ship PS3.16.

A coded entry (Code Value + Coding Scheme Designator + Code Meaning) names a concept of a
public vocabulary; its Code Meaning, though, is typed by whoever made the object and may hold
anything. Atlas therefore replaces the meaning of every code it *knows* by the standard's
text, and treats the meaning of any other code as free text (see
:func:`atlas.privacy.descriptors.clean_code_meaning` and
:func:`~atlas.privacy.descriptors.clean_code`).

Where the knowledge comes from (library data, never hand-typed)
----------------------------------------------------------------
- ``pydicom.sr._concepts_dict`` (the data behind ``pydicom.sr.codedict.codes``): every code of
  every context group (CID) of DICOM PS3.16, about 15,000 concepts of SCT, DCM, NCIt, UCUM,
  LN, FMA, RADLEX, ... with their meanings. A code listed under several keywords gets the
  meaning of a segmentation context group (CID 7150-7199) first, then the one that the most
  context groups use, then the first keyword in alphabetical order (deterministic).
- ``pydicom.sr._snomed_dict``: the SNOMED-RT (``SRT``) to SNOMED CT (``SCT``) mapping, so a
  legacy SRT code gets its SCT concept's meaning.
- ``highdicom``'s copy of PS3.16 Annex L, Table L-1: the Body Part Examined defined terms and
  their SCT anatomic region codes (:func:`body_part_code`).

All tables are built lazily, once per process.
"""

from __future__ import annotations

import json
import pkgutil
import re
from collections.abc import Mapping
from functools import lru_cache

__all__ = ["body_part_code", "is_sctid", "public_code", "standard_meaning"]

#: context groups of segmentation properties (PS3.16 CID 7150-7199): preferred meanings
_SEG_CIDS = range(7150, 7200)
_SCTID = re.compile(r"[1-9]\d{5,17}")
#: SNOMED CT partition identifiers of concepts (short and long format)
_CONCEPT_PARTITIONS = frozenset({"00", "10"})


@lru_cache(maxsize=1)
def _meanings() -> Mapping[tuple[str, str], str]:
    from pydicom.sr._concepts_dict import concepts as table

    concepts: dict[str, dict[str, dict[str, tuple[str, list[int]]]]] = table  # type: ignore[assignment]
    best: dict[tuple[str, str], tuple[tuple[int, int, str], str]] = {}
    for scheme, by_keyword in concepts.items():
        for keyword, entries in by_keyword.items():
            for value, (meaning, cids) in entries.items():
                seg = any(c in _SEG_CIDS for c in cids)
                rank = (0 if seg else 1, -len(cids), keyword)
                key = (str(scheme), str(value))
                if key not in best or rank < best[key][0]:
                    best[key] = (rank, str(meaning))
    out = {k: v for k, (_, v) in best.items()}
    for scheme, value, meaning in _body_parts().values():
        out.setdefault((scheme, value), meaning)
    return out


@lru_cache(maxsize=1)
def _srt_to_sct() -> Mapping[str, str]:
    from pydicom.sr._snomed_dict import mapping

    return dict(mapping.get("SRT", {}))


@lru_cache(maxsize=1)
def _body_parts() -> Mapping[str, tuple[str, str, str]]:
    """Body Part Examined defined term -> (scheme, value, meaning), PS3.16 Table L-1."""
    try:
        raw = pkgutil.get_data("highdicom", "_standard/anatomic_regions.json")
    except (ImportError, OSError):  # pragma: no cover - highdicom is an ingest dependency
        return {}
    if raw is None:  # pragma: no cover
        return {}
    table = json.loads(raw.decode("utf-8"))
    return {str(k): (str(v[0]), str(v[1]), str(v[2])) for k, v in table.items()}


def standard_meaning(scheme: str, value: str) -> str | None:
    """The standard's meaning of code ``value`` in scheme ``scheme``, or ``None`` if unknown.

    ``SRT`` (SNOMED-RT) codes are looked up through their SNOMED CT concept.
    """
    scheme, value = str(scheme).strip(), str(value).strip()
    if not scheme or not value:
        return None
    found = _meanings().get((scheme, value))
    if found is None and scheme == "SRT":
        sct = _srt_to_sct().get(value)
        if sct is not None:
            found = _meanings().get(("SCT", sct))
    return found


@lru_cache(maxsize=1)
def _public_schemes() -> frozenset[str]:
    from pydicom.sr._concepts_dict import concepts

    return frozenset({*map(str, concepts), "SRT", "SNM3"})


def public_code(scheme: str, value: str) -> bool:
    """Whether a code's value is defined by a public vocabulary rather than typed by someone.

    True for a code of the standard's dictionaries (:func:`standard_meaning`), and for any
    value of a public coding scheme that PS3.16 uses (``DCM``, ``LN``, ``UCUM``, ``NCIt`` ...)
    except that a SNOMED CT (``SCT``) value must be a well-formed SCTID. Private (``99...``)
    and local (``L``) schemes, and designators no dictionary knows, are not public: their
    values could be anything (a record number, a name).
    """
    scheme, value = str(scheme).strip(), str(value).strip()
    if not scheme or not value:
        return False
    if standard_meaning(scheme, value) is not None:
        return True
    if scheme == "SCT":
        return is_sctid(value)
    return scheme in _public_schemes()


def body_part_code(term: str) -> tuple[str, str, str] | None:
    """``(scheme, value, meaning)`` of a Body Part Examined defined term, or ``None``."""
    return _body_parts().get(str(term).strip().upper())


def is_sctid(value: str) -> bool:
    """Whether ``value`` is a well-formed SNOMED CT concept identifier.

    An SCTID is 6 to 18 digits whose last digit is a Verhoeff check digit and whose two
    digits before it are a concept partition identifier (``00`` or ``10``). A number typed by
    hand (a record number, a date) passes both checks about once in 500 tries.
    """
    value = str(value).strip()
    if _SCTID.fullmatch(value) is None:
        return False
    if value[-3:-1] not in _CONCEPT_PARTITIONS:
        return False
    return _verhoeff_ok(value)


_VERHOEFF_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def _verhoeff_ok(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0
