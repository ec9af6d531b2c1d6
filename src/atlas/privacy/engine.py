"""DICOM de-identification by construction (DICOM PS3.15 Annex E): the engine.

What it does
------------
:class:`Deidentifier` applies the *Basic Application Level Confidentiality Profile* (every
attribute of PS3.15 Table E.1-1 with its action D, Z, X, K, C, U or a combination,
:mod:`atlas.privacy.actions`) plus three options of that table (:mod:`atlas.privacy.profile`),
and returns a **new** dataset; the input is never modified:

* **Retain Longitudinal Temporal Information with Modified Dates** (``retain_dates``):
  every date is moved by a per-subject whole number of days (:mod:`atlas.privacy.dates`).
* **Retain Patient Characteristics** (``retain_patient_characteristics``): sex, age, size, weight,
  ethnic group, smoking and pregnancy status ... are kept (``K``), a few free-text patient
  attributes (allergies, patient state, pre-medication, special needs) are cleaned (``C``).
* **Clean Descriptors** (``clean_descriptors``): descriptive free text (Study/Series
  Description, Protocol Name, ROI Name, comments ...) is cleaned
  (:func:`atlas.privacy.descriptors.clean_text`).

All private attributes (odd groups, private creators included) are removed. Patient ID and
Patient Name become the keyed pseudonym :meth:`Deidentifier.subject_id`; every UID is mapped
with :meth:`Deidentifier.uid` (also inside sequences, so SEG/RTSTRUCT references stay
consistent with the mapped series); both derive from the site secret
(:mod:`atlas.privacy.pseudonyms`). Patient Identity Removed, De-identification Method (+ Code
Sequence, CID 7050) and Longitudinal Temporal Information Modified are set.

Our own engine applies the actions, because we need the options and deterministic keyed
mapping. ``deid`` and ``dicognito`` were not taken: ``deid`` ships its own recipe (a site
policy, not the table column by column) and ``dicognito`` hard-codes its own attribute handling.

Beyond the table (so that nothing original survives)
----------------------------------------------------
Attributes the table does not list are kept, except: unknown (VR UN) attributes, command (0000)
and file-meta (0002) elements in the data set, whole overlay groups (60xx), person names (PN)
and dates/datetimes (DA/DT; shifted under the dates option) are removed; times (TM) are kept
only under the dates option; UIDs are mapped unless they are DICOM-defined
(``1.2.840.10008.*``) or name a class or coding scheme (SOP Class UID, Transfer Syntax UID,
Coding Scheme UID ...). File meta information is rebuilt from the de-identified data set.

Free text outside the table, per field (the policy table is in ``docs/ingest.md``, decision
0014), is handled element by element in :mod:`atlas.privacy.elements`: Code Meanings, codes,
Body Part Examined, control characters. Manufacturer, Manufacturer's Model Name and Software
Versions describe the device, not the patient, and are kept.

Nothing here logs or raises with an original value or the key; ``repr`` hides the key.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atlas.errors import InvalidInput
from atlas.privacy.actions import Action, resolve
from atlas.privacy.dates import check_time, check_timezone, shift_value
from atlas.privacy.elements import (
    BODY_PART_EXAMINED,
    CLASS_UID_KEYWORDS,
    CODE_MEANING,
    CODE_TAGS,
    DATE_VRS,
    PATIENT_ID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    TEXT_VRS,
    TIMEZONE_OFFSET,
    WELL_KNOWN_UID_ROOT,
    clean_body_part,
    clean_element,
    code_item,
    dummy_value,
    element_values,
    map_values,
    printable_element,
    set_code_meaning,
    text_of,
    well_formed,
)
from atlas.privacy.profile import (
    DEFAULT_EDITION,
    METHOD_CODES,
    ProfileTable,
    basic_profile,
    check_edition,
    option_columns,
)
from atlas.privacy.pseudonyms import DEFAULT_SECRET_ENV, SiteKey

if TYPE_CHECKING:  # pydicom is imported lazily (ingest extra)
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

__all__ = ["Deidentifier"]

_log = logging.getLogger(__name__)


@dataclass
class _Context:
    """State of one :meth:`Deidentifier.deidentify` call (no original values are logged)."""

    shift_days: int
    removed: int = 0
    uids: int = 0
    cleaned: int = 0


class Deidentifier:
    """De-identify DICOM data sets with keyed, deterministic pseudonyms (PS3.15 Annex E).

    ``key`` is the site secret (at least 16 bytes, or a :class:`SiteKey`); every pseudonym
    derives from it (:mod:`atlas.privacy.pseudonyms`). It is kept only in memory and never
    printed: ``repr`` hides it. The three option flags switch the Table E.1-1 options on
    (default) or off: ``retain_dates`` is *Retain Longitudinal Temporal Information with
    Modified Dates* (dates are shifted, never kept as they were),
    ``retain_patient_characteristics`` and ``clean_descriptors`` the options of those names;
    ``edition`` picks the edition of the table (see :func:`basic_profile`).
    """

    __slots__ = (
        "clean_descriptors",
        "edition",
        "retain_dates",
        "retain_patient_characteristics",
        "site_key",
    )

    def __init__(
        self,
        key: bytes | SiteKey,
        *,
        retain_dates: bool = True,
        retain_patient_characteristics: bool = True,
        clean_descriptors: bool = True,
        edition: str = DEFAULT_EDITION,
    ) -> None:
        #: the site secret and the pseudonyms derived from it
        self.site_key = key if isinstance(key, SiteKey) else SiteKey(key)
        self.retain_dates = bool(retain_dates)
        self.retain_patient_characteristics = bool(retain_patient_characteristics)
        self.clean_descriptors = bool(clean_descriptors)
        self.edition = check_edition(edition)

    @classmethod
    def from_env(
        cls,
        var: str = DEFAULT_SECRET_ENV,
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
        key = SiteKey.from_env(var, environ=environ)
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

    def subject_id(self, patient_id: str) -> str:
        """The pseudonymous subject id of ``patient_id`` (:meth:`SiteKey.subject_id`)."""
        return self.site_key.subject_id(patient_id)

    def uid(self, original_uid: str) -> str:
        """The deterministic replacement of ``original_uid`` (:meth:`SiteKey.uid`)."""
        return self.site_key.uid(original_uid)

    def date_shift_days(self, patient_id: str) -> int:
        """Days every date of ``patient_id`` moves by (:meth:`SiteKey.date_shift_days`)."""
        return self.site_key.date_shift_days(patient_id)

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
        subject_key = patient_id if patient_id is not None else text_of(ds.get(PATIENT_ID))
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
            code_item(value, meaning) for value, meaning in self._method_codes()
        ]
        out.LongitudinalTemporalInformationModified = "MODIFIED" if self.retain_dates else "REMOVED"

        meta = FileMetaDataset()
        old_meta = getattr(ds, "file_meta", None)
        if SOP_CLASS_UID in out:
            meta.MediaStorageSOPClassUID = out[SOP_CLASS_UID].value
        if SOP_INSTANCE_UID in out:
            meta.MediaStorageSOPInstanceUID = out[SOP_INSTANCE_UID].value
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
        if CODE_MEANING in ds:
            set_code_meaning(ds, out)
        return out

    def _element(
        self, elem: DataElement, table: ProfileTable, ctx: _Context, clean_items: bool
    ) -> DataElement | None:
        new = self._apply(elem, table, ctx, clean_items)
        return printable_element(new) if new is not None else None

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
        if action is Action.KEEP and not well_formed(elem):
            ctx.cleaned += 1  # a malformed coded value is no characteristic: basic action
            return self._basic(elem, resolve(basic, vr), table, ctx, clean_items)
        if action is Action.KEEP:
            return self._keep(elem, table, ctx, clean_items)
        if action is Action.CLEAN:
            cleaned = self._clean(elem, table, ctx)
            if cleaned is not None:
                ctx.cleaned += 1
                return cleaned
        return self._basic(elem, resolve(basic, vr), table, ctx, clean_items)

    def _option_action(self, tag: int, vr: str, basic: Action) -> Action:
        return option_columns().action(
            tag,
            vr,
            basic,
            retain_dates=self.retain_dates,
            retain_patient_characteristics=self.retain_patient_characteristics,
            clean_descriptors=self.clean_descriptors,
        )

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
        if vr in DATE_VRS:
            return map_values(elem, lambda v: shift_value(v, ctx.shift_days))
        if vr == "TM":
            return map_values(elem, check_time)
        if tag == TIMEZONE_OFFSET:
            return map_values(elem, check_timezone)
        if vr in TEXT_VRS:
            return clean_element(elem)
        return None  # binary or numeric values cannot be cleaned

    def _basic(
        self,
        elem: DataElement,
        action: Action,
        table: ProfileTable,
        ctx: _Context,
        clean_items: bool,
    ) -> DataElement | None:
        from pydicom import Dataset
        from pydicom.dataelem import DataElement, empty_value_for_VR
        from pydicom.sequence import Sequence

        vr = elem.VR
        if action is Action.REMOVE:
            return None
        if action is Action.KEEP:  # a sequence under X/Z/U*: kept, its items de-identified
            return self._sequence(elem, table, ctx, clean_items)
        if action is Action.UID:
            if vr != "UI":
                return None
            return self._map_uids(elem, ctx)
        if action is Action.ZERO:
            if vr == "SQ":
                return DataElement(elem.tag, "SQ", Sequence())
            return DataElement(elem.tag, vr, empty_value_for_VR(vr))
        if action is Action.DUMMY:
            if vr == "SQ":
                return DataElement(elem.tag, "SQ", Sequence([Dataset()]))
            if vr == "UI":
                return self._map_uids(elem, ctx)
            dummy = dummy_value(vr)
            if dummy is None:
                return None
            return DataElement(elem.tag, vr, dummy)
        return None  # pragma: no cover - resolve only returns the actions above

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
            if elem.keyword in CLASS_UID_KEYWORDS:
                return copy.deepcopy(elem)
            return self._map_uids(elem, ctx)
        if vr in DATE_VRS:
            if not self.retain_dates:
                return None
            shifted = map_values(elem, lambda v: shift_value(v, ctx.shift_days))
            return shifted
        if vr == "TM":
            return map_values(elem, check_time) if self.retain_dates else None
        if int(elem.tag) == BODY_PART_EXAMINED:
            return clean_body_part(elem)
        if clean_items and vr in TEXT_VRS and vr != "CS" and int(elem.tag) not in CODE_TAGS:
            cleaned = clean_element(elem)
            if cleaned is not None:
                ctx.cleaned += 1
            return cleaned
        return copy.deepcopy(elem)

    def _map_uids(self, elem: DataElement, ctx: _Context) -> DataElement:
        from pydicom.dataelem import DataElement

        def one(value: Any) -> str:
            text = str(value).strip().rstrip("\x00")
            if not text or text.startswith(WELL_KNOWN_UID_ROOT):
                return text
            ctx.uids += 1
            return self.uid(text)

        values = element_values(elem)
        mapped = [one(v) for v in values]
        if elem.VM > 1:
            return DataElement(elem.tag, "UI", mapped)
        return DataElement(elem.tag, "UI", mapped[0] if mapped else elem.value)
