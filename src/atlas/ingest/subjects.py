r"""Which subject (patient) each DICOM instance belongs to, and series that mix subjects.

Every pseudonymous ``subject_id`` is :meth:`atlas.privacy.SiteKey.subject_id` of a *subject
key*: an HMAC with the site secret (:mod:`atlas.privacy.pseudonyms`). The key of an instance is
the first of these that gives a value:

1. ``map``: the site's subject map (``atlas ingest --subject-map FILE.csv``, see
   :class:`SubjectMap`): an entry for the file's path (the file itself or the nearest folder
   above it that has an entry), else for its Series Instance UID, else for its Study Instance
   UID. The mapped value is the patient's identifier at the site and is keyed exactly like a
   Patient ID, so a series mapped to ``P123`` gets the same pseudonym as the patient's series
   that carry Patient ID ``P123``.
2. ``patient_id``: Patient ID (0010,0020), surrounding spaces removed (the key every series
   with a Patient ID has always had).
3. ``name_birth_date``: Patient's Name (0010,0010) together with Patient's Birth Date
   (0010,0030), both present, the name compared without case, spacing and empty components,
   and not a placeholder such as ``ANONYMOUS`` or ``UNKNOWN`` (:data:`PLACEHOLDER_NAMES`).
4. ``study_uid``: Study Instance UID: every study without a better key is its own subject.

Keys from 3 and 4 carry a domain prefix (``\x00name+birth-date\x00`` ...) that no Patient ID
can hold, so they never collide with a Patient ID. Which rule gave the key is recorded with
the series (``subject_source``, a name, never the value).

A series whose instances have different keys is never merged: it is split into one part per
key (each part its own image under its own subject, ``split_by_subject``), and each part gets
its own study and series ids, derived from the original UIDs and the part's subject. SEG and
RTSTRUCT objects that reference such a series are attached only to the part of their own
subject.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atlas.errors import ConfigError
from atlas.ingest.model import InstanceInfo, Quarantined, SeriesGroup
from atlas.privacy.pseudonyms import SiteKey

SOURCES = ("map", "patient_id", "name_birth_date", "study_uid")
MAP_COLUMNS = ("kind", "key", "patient_id")
MAP_KINDS = ("path", "series", "study")

#: Patient's Name values that name nobody (compared as lower-case letters only)
PLACEHOLDER_NAMES = frozenset(
    {
        "",
        "anon",
        "anonymous",
        "anonymized",
        "anonymised",
        "anonymouspatient",
        "deidentified",
        "removed",
        "unknown",
        "none",
        "null",
        "na",
        "noname",
        "patient",
        "test",
        "xxx",
    }
)

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DATE = re.compile(r"[0-9]{8}")


def _uid_ok(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.fullmatch(value))


def _norm_name(name: str) -> str:
    parts = [" ".join(p.split()).upper() for p in str(name).replace("=", "^").split("^")]
    return "^".join(parts).rstrip("^")


@dataclass
class SubjectMap:
    """The site's own subject assignments: path / Series UID / Study UID → patient identifier.

    Read from a UTF-8 CSV file with the header ``kind,key,patient_id``; ``kind`` is ``path``
    (a file or folder; relative paths are relative to the CSV file's folder), ``series`` (a
    Series Instance UID) or ``study`` (a Study Instance UID). The most specific entry wins:
    path (nearest), then series, then study. Values are original identifiers: they are used
    in memory only, and no error message repeats them (rows are named by number).
    """

    paths: dict[str, str] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)
    studies: dict[str, str] = field(default_factory=dict)
    used: set[tuple[str, str]] = field(default_factory=set)

    def __repr__(self) -> str:
        return (
            f"SubjectMap(paths={len(self.paths)}, series={len(self.series)}, "
            f"studies={len(self.studies)})"
        )

    def __len__(self) -> int:
        return len(self.paths) + len(self.series) + len(self.studies)

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> SubjectMap:
        """Read and validate a subject map file; :class:`ConfigError` says what is wrong."""
        file = Path(path)
        where = f"subject map {file}"
        try:
            text = file.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"{where} does not exist") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read ({type(exc).__name__})") from None
        rows = list(csv.reader(text.splitlines()))
        if not rows or [c.strip().lower() for c in rows[0]] != list(MAP_COLUMNS):
            raise ConfigError(f"{where}: the first line must be the header {','.join(MAP_COLUMNS)}")
        out = cls()
        tables = {"path": out.paths, "series": out.series, "study": out.studies}
        base = file.resolve().parent
        for n, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise ConfigError(f"{where}, line {n}: expected 3 fields, found {len(row)}")
            kind, key, value = (c.strip() for c in row)
            if kind.lower() not in MAP_KINDS:
                raise ConfigError(f"{where}, line {n}: kind must be one of {', '.join(MAP_KINDS)}")
            kind = kind.lower()
            if not key or not value:
                raise ConfigError(f"{where}, line {n}: key and patient_id must not be empty")
            if any(ord(c) < 32 for c in key + value):
                raise ConfigError(f"{where}, line {n}: control characters are not allowed")
            if kind == "path":
                resolved = Path(key).expanduser()
                resolved = (resolved if resolved.is_absolute() else base / resolved).resolve()
                if not resolved.exists():
                    raise ConfigError(f"{where}, line {n}: the path does not exist")
                key = str(resolved)
            elif not _uid_ok(key):
                raise ConfigError(f"{where}, line {n}: the key is not a DICOM UID")
            table = tables[kind]
            if table.get(key, value) != value:
                raise ConfigError(
                    f"{where}, line {n}: this {kind} is already mapped to another patient_id"
                )
            table[key] = value
        if not len(out):
            raise ConfigError(f"{where} has no entries")
        return out

    def lookup(self, info: InstanceInfo) -> str | None:
        """The mapped patient identifier of one instance, or ``None``."""
        if self.paths:
            here = Path(info.ref.path).resolve()
            for candidate in (here, *here.parents):
                value = self.paths.get(str(candidate))
                if value is not None:
                    self.used.add(("path", str(candidate)))
                    return value
        for kind, table, uid in (
            ("series", self.series, info.series_uid),
            ("study", self.studies, info.study_uid),
        ):
            value = table.get(uid)
            if value is not None:
                self.used.add((kind, uid))
                return value
        return None

    @property
    def unused(self) -> int:
        """How many entries matched no instance so far."""
        return len(self) - len(self.used)


def subject_key(info: InstanceInfo, subject_map: SubjectMap | None = None) -> tuple[str, str]:
    """``(key, source)`` of one instance, by the order in the module docstring."""
    if subject_map is not None:
        mapped = subject_map.lookup(info)
        if mapped is not None:
            return mapped.strip(), "map"
    pid = str(info.patient_id or "").strip()
    if pid:
        return pid, "patient_id"
    name = _norm_name(info.patient_name)
    birth = str(info.patient_birth_date or "").strip()
    letters = "".join(c for c in name.lower() if c.isalpha())
    if letters not in PLACEHOLDER_NAMES and _DATE.fullmatch(birth):
        return f"\x00name+birth-date\x00{name}\x00{birth}", "name_birth_date"
    return f"\x00study\x00{info.study_uid}", "study_uid"


def group_subject(group: SeriesGroup) -> tuple[str, str]:
    """The subject key and source of a group (assigned by :func:`assign`, else derived)."""
    if group.subject_key:
        return group.subject_key, group.subject_source or "patient_id"
    if not group.instances:
        return f"\x00study\x00{group.study_uid}", "study_uid"
    return subject_key(group.instances[0])


def ids(site_key: SiteKey, group: SeriesGroup) -> tuple[str, str, str]:
    """``(subject_id, study_id, series_id)`` of a group (parts of a split series differ)."""
    key, _ = group_subject(group)
    subject = site_key.subject_id(key)
    if group.split_by_subject:
        return (
            subject,
            site_key.uid(f"{group.study_uid}/subject/{subject}"),
            site_key.uid(f"{group.series_uid}/subject/{subject}"),
        )
    return subject, site_key.uid(group.study_uid), site_key.uid(group.series_uid)


def assign(
    series: Sequence[SeriesGroup], subject_map: SubjectMap | None = None
) -> list[SeriesGroup]:
    """Give every group its subject key; split groups whose instances name several subjects."""
    out: list[SeriesGroup] = []
    for group in series:
        parts: dict[str, SeriesGroup] = {}
        for inst in group.instances:
            key, source = subject_key(inst, subject_map)
            part = parts.get(key)
            if part is None:
                part = parts[key] = SeriesGroup(
                    group.study_uid,
                    group.series_uid,
                    inst.modality or group.modality,
                    subject_key=key,
                    subject_source=source,
                )
            part.instances.append(inst)
        if len(parts) <= 1:
            if parts:
                only = next(iter(parts.values()))
                group.subject_key, group.subject_source = only.subject_key, only.subject_source
            out.append(group)
            continue
        for part in parts.values():
            part.split_by_subject = True
            out.append(part)
    return out


def segmentations_for(
    groups: Iterable[SeriesGroup],
    by_series: dict[str, list[InstanceInfo]],
    subject_map: SubjectMap | None = None,
) -> tuple[dict[int, list[InstanceInfo]], list[Quarantined]]:
    """SEG/RTSTRUCT objects per group (by ``id``); a split series gets only its subject's."""
    out: dict[int, list[InstanceInfo]] = {}
    placed: dict[int, bool] = {}
    candidates: dict[int, InstanceInfo] = {}
    for group in groups:
        segs = by_series.get(group.series_uid, [])
        if group.split_by_subject:
            mine = [s for s in segs if subject_key(s, subject_map)[0] == group.subject_key]
            for s in segs:
                candidates[id(s)] = s
                placed[id(s)] = placed.get(id(s), False) or any(m is s for m in mine)
            segs = mine
        else:
            for s in segs:
                placed[id(s)] = True
        out[id(group)] = segs
    problems = [
        Quarantined(
            seg.ref,
            f"{seg.modality} references a series that mixes patients, and its own patient "
            "is none of them",
        )
        for key, seg in candidates.items()
        if not placed.get(key)
    ]
    return out, problems


__all__ = [
    "MAP_COLUMNS",
    "PLACEHOLDER_NAMES",
    "SOURCES",
    "SubjectMap",
    "assign",
    "group_subject",
    "ids",
    "segmentations_for",
    "subject_key",
]
