"""De-identified text of label objects: what a label is called and what it codes for.

RTSTRUCT ROI names, SEG segment labels and the Code Meanings in their code sequences are
typed by people and may hold anything (``Smith^John 1961-02-03``, ``tumour of patient
123456``). Everything Atlas writes about a label (the OME ``image-label`` properties, the
staging records, the index's ``label_name`` and the manifest's statistics) comes from the
:class:`~atlas.ingest.model.LabelVolume` that :func:`deidentify_labels` returns, which holds
no text of the original object except what passes the rules of
:mod:`atlas.privacy.descriptors` (decision 0013), applied here to each label value:

**Name** (ROI Name, Segment Label, NIfTI names): control characters are removed
(:func:`atlas.privacy.safe_text.printable`), then the Clean Descriptors rule of
:func:`atlas.privacy.descriptors.clean_text` applies: a name made of known anatomical/label words
(``Liver``, ``GTV``, ``liver tumour``, ``PTV 70GY``) is kept as it is; a name where only some
words are known keeps those words (``tumour of patient 123456`` -> ``tumour of patient``);
a name with no known word left except numbers and function words (``of``, ``the``, ``L``)
becomes the neutral name ``<kind>-<value>``
(``roi-3``, ``segment-2``, ``label-1``).

**Code** (segmented property type, RT ROI identification code): kept when its (scheme,
value) is a concept of the standard's code dictionaries (:mod:`atlas.privacy.codes`), with the
standard's meaning in place of the typed one; a SNOMED CT code not in those dictionaries is
kept when its value is a well-formed SCTID (Verhoeff check digit), its typed meaning cleaned
like a descriptor or dropped; any other code (private schemes, malformed values) is dropped,
because its value could be anything.

What was changed is recorded as a list of field names per label value
(:attr:`LabelVolume.cleaned`: ``"name"``, ``"code"``, ``"code_meaning"``), never the
original text. Descriptions, observation labels, interpreters and algorithm names of the
label object are not read at all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from atlas.ingest.model import LabelVolume
from atlas.privacy.descriptors import clean_code, clean_name, neutral_name

__all__ = ["deidentify_labels", "label_properties"]


def deidentify_labels(lab: LabelVolume) -> LabelVolume:
    """A copy of ``lab`` whose names and codes follow the module rules (mask shared)."""
    names: dict[int, str] = {}
    codes: dict[int, dict[str, str]] = {}
    cleaned: dict[int, list[str]] = {}
    for value in sorted(set(lab.names) | set(lab.codes)):
        changed: list[str] = []
        name, name_changed = clean_name(lab.names.get(value), neutral_name(lab.source, value))
        names[value] = name
        if name_changed:
            changed.append("name")
        code, code_changed = clean_code(lab.codes.get(value))
        if code is not None:
            codes[value] = code
        changed.extend(code_changed)
        if changed:
            cleaned[value] = changed
    return replace(lab, names=names, codes=codes, cleaned=cleaned)


def label_properties(lab: LabelVolume) -> dict[int, dict[str, Any]]:
    """The OME ``image-label`` properties of each value of a de-identified ``lab``."""
    out: dict[int, dict[str, Any]] = {}
    for value in lab.names:
        props: dict[str, Any] = {"source": lab.source}
        if (code := lab.codes.get(value)) is not None:
            props["code"] = dict(code)
        if changed := lab.cleaned.get(value):
            props["cleaned"] = list(changed)
        out[value] = props
    return out
