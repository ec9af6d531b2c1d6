"""PS3.15 Table E.1-1: the basic profile column and the option columns the engine applies.

Where each column comes from (decisions 0008 and 0032)
------------------------------------------------------
The **basic profile column** is read, lazily and once, from the maintained ``dicom-anonymizer``
package (BSD, depends only on pydicom), which ships Table E.1-1 as tag lists per action and per
edition of the standard (``dicomanonymizer.dicomfields_selector``). We use its newest edition,
**2026c** (655 attributes). We checked its 2024b edition against the machine-readable 2024b table
of ``innolitics/dicom-standard`` (generated from the standard's own XML): the same 620
attributes with the same actions.

The **option columns** (Retain Patient Characteristics, Retain Longitudinal Temporal Information
with Modified Dates, Clean Descriptors), which that package does not ship, are read from
``atlas/privacy/data/table-e1-1-options.csv``. That file is written only by
``scripts/generate_deid_options.py`` from the copy of Table E.1-1 that the ``idiscore`` package
ships (scraped from the standard's chapter E), and records its source, the source file's
SHA-256, the scrape date and edition; ``tests/privacy/test_profile.py`` checks the shipped file
against the generator.

How the options apply (:meth:`OptionColumns.action`)
----------------------------------------------------
* *Rtn. Pat. Chars.*: the column's ``K`` and ``C`` entries.
* *Rtn. Long. Modif. Dates*: ``C`` for the column's entries, and, so that date attributes added
  to the standard after the column's edition are shifted too, for any DA/DT/TM attribute of the
  table except Patient's Birth Date, Patient's Birth Time and GPS Time Stamp, plus Timezone
  Offset From UTC. On every attribute the column's edition lists, this rule and the column
  agree (two OB timestamps are in the column but cannot be shifted: they get their basic action).
* *Clean Desc.*: the column's ``C`` entries.

The options are checked in that order; an attribute no option column names keeps its basic
action.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from atlas.errors import ConfigError
from atlas.privacy.actions import TEMPORAL_VRS, Action

__all__ = [
    "DEFAULT_EDITION",
    "METHOD_CODES",
    "OPTIONS_TABLE",
    "OptionColumns",
    "ProfileTable",
    "basic_profile",
    "check_edition",
    "option_columns",
]

#: the edition of PS3.15 Table E.1-1 used unless another is asked for
DEFAULT_EDITION = "2026c"
#: the generated option columns, inside the package
OPTIONS_TABLE = "data/table-e1-1-options.csv"
_EDITION = re.compile(r"\d{4}[a-e]?")

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


#: date attributes that the Modified Dates option does NOT retain
_DATES_NOT_RETAINED = frozenset(
    {
        0x00100030,  # Patient's Birth Date
        0x00100032,  # Patient's Birth Time
        0x00160077,  # GPS Time Stamp
    }
)
_TIMEZONE_OFFSET = 0x00080201


def check_edition(edition: object) -> str:
    """``edition`` if it names an edition of PS3.15 (``2026c``), else :class:`ConfigError`."""
    if not isinstance(edition, str) or not _EDITION.fullmatch(edition):
        raise ConfigError(f"not a PS3.15 edition name: {edition!r} (e.g. {DEFAULT_EDITION!r})")
    return edition


@dataclass(frozen=True)
class ProfileTable:
    """PS3.15 Table E.1-1, basic profile column, of one edition.

    ``exact`` maps a tag (``0xGGGGEEEE``) to its :class:`Action` (``X``, ``Z/D``, ``X/Z/U*``
    ...); ``masked`` lists ``(group, element, group_mask, element_mask, action)`` for repeating
    groups such as curve data (50xx,xxxx) and overlays (60xx,3000).
    """

    edition: str
    exact: Mapping[int, Action]
    masked: tuple[tuple[int, int, int, int, Action], ...] = field(default=())

    def action(self, tag: int) -> Action | None:
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


_CATEGORY_ACTIONS: Mapping[str, Action] = {
    "D_TAGS": Action.DUMMY,
    "Z_TAGS": Action.ZERO,
    "X_TAGS": Action.REMOVE,
    "U_TAGS": Action.UID,
    "Z_D_TAGS": Action.ZERO_OR_DUMMY,
    "X_Z_TAGS": Action.REMOVE_OR_ZERO,
    "X_D_TAGS": Action.REMOVE_OR_DUMMY,
    "X_Z_D_TAGS": Action.REMOVE_OR_ZERO_OR_DUMMY,
    "X_Z_U_STAR_TAGS": Action.REMOVE_OR_ZERO_OR_UID,
}


@lru_cache(maxsize=4)
def basic_profile(edition: str = DEFAULT_EDITION) -> ProfileTable:
    """Load (once, then cached) Table E.1-1 of ``edition`` from ``dicom-anonymizer``.

    Raises :class:`ConfigError` when the package is missing or has no such edition.
    """
    check_edition(edition)
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
    exact: dict[int, Action] = {}
    masked: list[tuple[int, int, int, int, Action]] = []
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


@dataclass(frozen=True)
class OptionColumns:
    """The option columns of Table E.1-1 that the engine applies (see the module docstring).

    ``patient_characteristics`` maps a tag to ``K`` or ``C``; ``modified_dates`` and
    ``clean_descriptors`` list the tags whose action is ``C``. ``source`` and ``edition`` are
    the provenance lines of the generated table.
    """

    source: str
    edition: str
    patient_characteristics: Mapping[int, Action]
    modified_dates: frozenset[int]
    clean_descriptors: frozenset[int]

    def action(
        self,
        tag: int,
        vr: str,
        basic: Action,
        *,
        retain_dates: bool,
        retain_patient_characteristics: bool,
        clean_descriptors: bool,
    ) -> Action:
        """The action for an attribute of the table under the options switched on."""
        if retain_patient_characteristics:
            found = self.patient_characteristics.get(tag)
            if found is not None:
                return found
        if retain_dates and (
            tag in self.modified_dates
            or (vr in TEMPORAL_VRS and tag not in _DATES_NOT_RETAINED)
            or tag == _TIMEZONE_OFFSET
        ):
            return Action.CLEAN
        if clean_descriptors and tag in self.clean_descriptors:
            return Action.CLEAN
        return basic


def _parse_options(text: str) -> OptionColumns:
    meta: dict[str, str] = {}
    body = []
    for line in text.splitlines():
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            meta.setdefault(key, value)
        elif line and not line.startswith("#"):
            body.append(line)
    chars: dict[int, Action] = {}
    dates: set[int] = set()
    descriptors: set[int] = set()
    for row in csv.DictReader(io.StringIO("\n".join(body))):
        tag, action = int(row["tag"], 16), Action(row["action"])
        if row["option"] == "retain_patient_characteristics" and action in (
            Action.KEEP,
            Action.CLEAN,
        ):
            chars[tag] = action
        elif row["option"] == "retain_dates" and action is Action.CLEAN:
            dates.add(tag)
        elif row["option"] == "clean_descriptors" and action is Action.CLEAN:
            descriptors.add(tag)
        else:  # pragma: no cover - the generator writes only the rows above
            raise ConfigError(f"unexpected row in {OPTIONS_TABLE}: {row}")
    if not (chars and dates and descriptors) or "source" not in meta:  # pragma: no cover
        raise ConfigError(f"{OPTIONS_TABLE} is incomplete: regenerate it")
    return OptionColumns(
        source=meta["source"],
        edition=meta.get("edition", ""),
        patient_characteristics=chars,
        modified_dates=frozenset(dates),
        clean_descriptors=frozenset(descriptors),
    )


@lru_cache(maxsize=1)
def option_columns() -> OptionColumns:
    """The generated option columns shipped with the package (read once, then cached)."""
    text = resources.files("atlas.privacy").joinpath(OPTIONS_TABLE).read_text(encoding="utf-8")
    return _parse_options(text)
