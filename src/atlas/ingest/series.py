"""Ingest one series: the unit of work a dask worker runs.

decode → de-identify → labels → OME-Zarr image(s) → staging records → journal entry.

Everything that leaves this function is pseudonymous: ids come from the site key, the header
is de-identified, and the reasons of quarantined files are scrubbed of every original value the
series carried.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from atlas import records
from atlas.errors import AtlasError
from atlas.ingest import claims, subjects
from atlas.ingest.model import FileRef, InstanceInfo, LabelVolume, Quarantined, SeriesGroup, Volume
from atlas.ingest.safe_io import DEFAULT_MAX_IMAGE_BYTES, ReadLimits
from atlas.records import journal, ownership
from atlas.storage import Store

if TYPE_CHECKING:
    from atlas.ingest.parts import VolumePart

SECRET_ENV = "ATLAS_SITE_SECRET"


@dataclass(frozen=True)
class IngestOptions:
    """How a site ingests: where the key comes from and what to let through."""

    secret_env: str = SECRET_ENV
    allow_burned_in: bool = False
    retain_dates: bool = True
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    #: the largest decoded image and (plus a header allowance) input object ingest reads
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @property
    def limits(self) -> ReadLimits:
        """The read limits these options set (validated)."""
        return ReadLimits(self.max_image_bytes)


@dataclass(repr=False)
class SeriesTask:
    """Everything one worker needs for one series (pickled to the worker; held in memory)."""

    store: Store
    site: str
    collection: str
    group: SeriesGroup
    segmentations: list[InstanceInfo] = field(default_factory=list)
    nifti_labels: list[FileRef] = field(default_factory=list)
    options: IngestOptions = field(default_factory=IngestOptions)

    def __repr__(self) -> str:
        return f"SeriesTask(site={self.site!r}, collection={self.collection!r})"


@dataclass
class SeriesOutcome:
    """What happened to one series (pseudonymous ids and counts only)."""

    series_id: str
    status: str  # "written", "skipped" or "quarantined"
    images: list[str] = field(default_factory=list)
    n_files: int = 0
    n_images: int = 0
    n_annotations: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    quarantined: list[Quarantined] = field(default_factory=list)
    #: the ``--labels`` NIfTI masks that matched an image of this series
    used_masks: list[str] = field(default_factory=list)
    #: ``--labels`` masks that could not be read, and why (path -> reason)
    mask_problems: dict[str, str] = field(default_factory=dict)
    #: library warnings seen while reading this series' originals, value-free (see ``quiet``)
    notes: dict[str, int] = field(default_factory=dict)
    #: why the series was not written by this run (``busy``: another run holds it)
    status_reason: str = ""


def make_deidentifier(options: IngestOptions) -> Any:
    """The de-identifier ``options`` ask for, keyed by the site secret they name.

    Raises
    ------
    ConfigError
        The secret's environment variable is unset or the key is too weak (checked before any
        pixel is read).
    """
    from atlas.privacy.engine import Deidentifier

    return Deidentifier.from_env(
        options.secret_env,
        retain_dates=options.retain_dates,
        retain_patient_characteristics=options.retain_patient_characteristics,
        clean_descriptors=options.clean_descriptors,
    )


class Scrubber:
    """Removes original identifiers from free text (third-party error messages)."""

    def __init__(self, originals: set[str]) -> None:
        values = sorted((v for v in originals if v and len(v) >= 4), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str) -> str:
        """``text`` with every original identifier replaced by ``<redacted>``."""
        return self._pattern.sub("<redacted>", text) if self._pattern else text


def _originals(group: SeriesGroup, extra: list[InstanceInfo]) -> set[str]:
    out = {group.study_uid, group.series_uid}
    if group.subject_source == "map":  # the site's own patient id (derived keys are below)
        out.add(group.subject_key)
    for inst in [*group.instances, *extra]:
        out.update(
            v
            for v in (
                inst.patient_id,
                inst.patient_name,
                inst.patient_birth_date,
                inst.sop_instance_uid,
                inst.study_uid,
                inst.series_uid,
                inst.frame_of_reference_uid,
            )
            if v
        )
    return out


def _header_originals(ds: Any) -> set[str]:
    """Names and dates of a header (added to the scrubber once the header is read)."""
    out: set[str] = set()
    for elem in ds.iterall():
        if elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            values = elem.value if elem.VM > 1 else [elem.value]
            out.update(str(v) for v in values)
    return out


_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "DA", "DT", "TM", "UI", "AE"})


def _read_header(ref: FileRef, limits: ReadLimits) -> Any:
    from atlas.ingest.dicom_io import read_dataset

    return read_dataset(ref, stop_before_pixels=True, limits=limits)


def _read_full(ref: FileRef, limits: ReadLimits) -> Any:
    from atlas.ingest.dicom_io import read_dataset

    return read_dataset(ref, stop_before_pixels=False, limits=limits)


def _age_years(value: Any) -> float | None:
    text = str(value or "").strip().upper()
    m = re.fullmatch(r"(\d{1,3})([DWMY])", text)
    if not m:
        return None
    n = float(m.group(1))
    return {"D": n / 365.25, "W": n / 52.18, "M": n / 12.0, "Y": n}[m.group(2)]


def _text(ds: Any, keyword: str) -> str | None:
    value = getattr(ds, keyword, None)
    return str(value) if value not in (None, "") else None


def _float(ds: Any, keyword: str) -> float | None:
    """A finite number, else ``None`` (NaN or infinity never reach a record or JSON)."""
    try:
        value = getattr(ds, keyword, None)
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _load_parts(
    task: SeriesTask,
    volume_groups: list[list[InstanceInfo]],
    out: SeriesOutcome,
    scrub: Scrubber,
    deid: Any,
    used_labels: set[int],
    label_problems: list[Quarantined],
) -> Iterator[tuple[VolumePart, list[tuple[str, LabelVolume]]]]:
    """Load each volume, map its labels on the whole stack, then yield its parts.

    The parts are evenly spaced (:func:`~atlas.ingest.parts.regular_parts`), each with its
    slices of the labels.

    Volumes that cannot be loaded are quarantined into ``out``; one volume is in memory at a
    time.
    """
    from atlas.ingest.parts import regular_parts
    from atlas.ingest.pixels import load_volume

    for instances in volume_groups:
        try:
            volume = load_volume(instances, limits=task.options.limits)
        except (AtlasError, ValueError, NotImplementedError, RuntimeError, OSError) as exc:
            reason = (
                scrub(f"{type(exc).__name__}: {exc}")
                if not isinstance(exc, AtlasError)
                else scrub(str(exc))
            )
            out.quarantined.extend(Quarantined(i.ref, reason, out.series_id) for i in instances)
            continue
        labels, problems, used = _labels_for_volume(task, volume, scrub, deid, out)
        used_labels |= used
        label_problems.extend(problems)
        for part in regular_parts(volume):
            if part.count == 1:
                yield part, labels
                continue
            yield (
                part,
                [
                    (name, replace(lab, mask=lab.mask[part.start : part.stop]))
                    for name, lab in labels
                ],
            )


def label_failure(what: str, exc: BaseException, scrub: Scrubber) -> str:
    """The quarantine reason of a label object that could not be used (no original text).

    Atlas's own errors name the problem without original values; a third-party exception's
    message may quote the object's free text, so only its type is given.
    """
    if isinstance(exc, AtlasError):
        return f"{what} not used: {scrub(str(exc))}"
    return f"{what} cannot be read ({type(exc).__name__}); it may be malformed"


def _labels_for_volume(
    task: SeriesTask,
    volume: Volume,
    scrub: Scrubber,
    deid: Any,
    out: SeriesOutcome,
) -> tuple[list[tuple[str, LabelVolume]], list[Quarantined], set[int]]:
    """Label images that fit this volume, de-identified; failures are returned separately.

    A label object that cannot be read or does not fit never sinks the image: it is reported
    (and quarantined by the caller unless it fits another volume of the series).
    """
    from atlas.ingest.label_text import deidentify_labels
    from atlas.ingest.labels import (
        GeometryMismatch,
        nifti_to_labels,
        rtstruct_to_labels,
        seg_to_labels,
    )

    found: list[tuple[str, LabelVolume]] = []
    problems: list[Quarantined] = []
    used: set[int] = set()
    ordered = sorted(enumerate(task.segmentations), key=lambda p: deid.uid(p[1].sop_instance_uid))
    for index, seg in ordered:
        try:
            ds = _read_full(seg.ref, task.options.limits)
            if seg.modality == "SEG":
                lab = seg_to_labels(ds, volume)
            else:
                lab = rtstruct_to_labels(ds, volume)
            lab = deidentify_labels(lab)
        except Exception as exc:  # a bad label object is the object's problem, not the image's
            problems.append(Quarantined(seg.ref, label_failure(seg.modality, exc, scrub)))
            continue
        used.add(index)
        found.append((f"{seg.modality.lower()}-{deid.uid(seg.sop_instance_uid)[-8:]}", lab))
    for k, ref in enumerate(task.nifti_labels):
        try:
            lab = deidentify_labels(nifti_to_labels(ref.path, volume))
        except GeometryMismatch:
            continue  # belongs to another series/volume; the driver reports unmatched masks
        except Exception as exc:
            out.mask_problems.setdefault(ref.path, label_failure("NIfTI mask", exc, scrub))
            continue
        found.append((f"nifti-{k}", lab))
        out.used_masks.append(ref.path)
    return found, problems, used


def _series_row_fields(header: Any) -> dict[str, Any]:
    return {
        "modality": _text(header, "Modality"),
        "body_part": _text(header, "BodyPartExamined"),
        "manufacturer": _text(header, "Manufacturer"),
        "model": _text(header, "ManufacturerModelName"),
        "sex": _text(header, "PatientSex"),
        "age_years": _age_years(getattr(header, "PatientAge", None)),
        "acquisition_date": _text(header, "AcquisitionDate")
        or _text(header, "SeriesDate")
        or _text(header, "StudyDate"),
        # a thickness that is not a positive finite number is left out (the image notes it)
        "slice_thickness": t if (t := _float(header, "SliceThickness")) and 0 < t <= 1e6 else None,
    }


@claims.scoped
def ingest_series(task: SeriesTask) -> SeriesOutcome:
    """Ingest one series (all its volumes and labels); never raises for bad input."""
    from atlas.ingest.geometry import split_series
    from atlas.ingest.label_text import label_properties
    from atlas.ome import LabelSpec, write_image
    from atlas.privacy.burned_in import burned_in_risk
    from atlas.privacy.header import header_json

    t0 = time.perf_counter()
    group = task.group
    deid = make_deidentifier(task.options)
    patient, subject_source = subjects.group_subject(group)
    subject_id, study_id, series_id = subjects.ids(deid.site_key, group)
    out = SeriesOutcome(series_id=series_id, status="written", n_files=len(group.instances))
    out.bytes_in = sum(_size(i.ref) for i in group.instances)
    scrub = Scrubber(_originals(group, task.segmentations))
    store, collection = task.store, task.collection
    if already_done(store, collection, out, [i.ref for i in group.instances]):
        out.seconds = time.perf_counter() - t0
        return out

    def quarantine_all(reason: str) -> SeriesOutcome:
        out.status = "quarantined"
        out.quarantined.extend(Quarantined(i.ref, reason, series_id) for i in group.instances)
        out.seconds = time.perf_counter() - t0
        return out

    try:
        first_header = _read_header(group.instances[0].ref, task.options.limits)
    except Exception as exc:
        return quarantine_all(f"unreadable header: {scrub(type(exc).__name__ + ': ' + str(exc))}")
    scrub = Scrubber(_originals(group, task.segmentations) | _header_originals(first_header))
    risk = burned_in_risk(first_header)
    if risk and not task.options.allow_burned_in:
        return quarantine_all(
            f"may carry burned-in text ({risk}); rerun with --allow-burned-in after review"
        )

    volume_groups, split_problems = split_series(group)
    out.quarantined.extend(Quarantined(q.ref, scrub(q.reason), series_id) for q in split_problems)
    base = {
        "site": task.site,
        "collection": collection,
        "subject_id": subject_id,
        "study_id": study_id,
        "series_id": series_id,
    }
    subject_fields = {"subject_source": subject_source, "split_by_subject": group.split_by_subject}
    series_rows: list[dict[str, Any]] = []
    image_rows: list[dict[str, Any]] = []
    annotation_rows: list[dict[str, Any]] = []
    used_labels: set[int] = set()
    label_problems: list[Quarantined] = []
    loaded = _load_parts(task, volume_groups, out, scrub, deid, used_labels, label_problems)
    for vi, (part, labels) in enumerate(loaded):
        volume = part.volume
        clean_header = deid.deidentify(volume.header, patient_id=patient)
        if group.split_by_subject:  # a part of a mixed series: its own study and series ids
            clean_header.StudyInstanceUID, clean_header.SeriesInstanceUID = study_id, series_id
        fields = _series_row_fields(clean_header)
        suffix = "" if len(volume_groups) == 1 and part.count == 1 else f"_v{vi + 1}"
        path = f"{collection}/{subject_id}/{study_id}/{series_id}{suffix}.ome.zarr"
        spatial = volume.pixels.shape[-3:]
        image = write_image(
            store,
            path,
            volume.pixels,
            spacing=volume.spacing,
            origin=volume.origin,
            direction=volume.direction,
            slice_step=volume.slice_step,
            axes=volume.axes,
            name=f"{series_id}{suffix}",
            modality=fields["modality"],
            labels={
                name: LabelSpec(
                    lab.mask,
                    names=dict(lab.names),
                    colors=dict(lab.colors),
                    properties=label_properties(lab),
                )
                for name, lab in labels
            },
            extra_attributes={
                "dicom": header_json(clean_header),
                "series": {**base, "volume": vi, **fields, **subject_fields},
                "regularly_spaced": volume.regularly_spaced,
                "spacing_note": volume.spacing_note,
                "part": part.attributes(),
            },
            overwrite=True,
        )
        out.images.append(path)
        image_ids = [f"{deid.uid(sop)}/{frame}" for sop, frame in volume.frames]
        vbase = {**base, "volume": vi}
        for z, (sop, frame) in enumerate(volume.frames):
            image_rows.append(
                {
                    **vbase,
                    "image_id": image_ids[z],
                    "sop_instance_id": deid.uid(sop),
                    "frame": frame,
                    "z_index": z,
                    "position_mm": volume.slice_positions[z] if volume.slice_positions else None,
                    "image_path": path,
                    "modality": fields["modality"],
                    "rows": int(spatial[1]),
                    "columns": int(spatial[2]),
                    "annotated": False,
                }
            )
        first_row = len(image_rows) - len(volume.frames)
        for name, lab in labels:
            rows = records.annotation_rows(
                lab.mask,
                base={**vbase, "image_path": path},
                image_ids=image_ids,
                label_image=name,
                names=lab.names,
                codes=lab.codes,
                source=lab.source,
                cleaned=lab.cleaned,
            )
            for r in rows:
                image_rows[first_row + r["z_index"]]["annotated"] = True
            annotation_rows.extend(rows)
        meta = image.metadata
        series_rows.append(
            {
                **vbase,
                **fields,
                "image_store": store.url,
                "image_path": path,
                "spacing_z": volume.spacing[0],
                "spacing_y": volume.spacing[1],
                "spacing_x": volume.spacing[2],
                "size_z": int(spatial[0]),
                "size_y": int(spatial[1]),
                "size_x": int(spatial[2]),
                "channels": int(volume.pixels.shape[0]) if volume.axes.startswith("c") else 1,
                "dtype": str(volume.pixels.dtype),
                "regularly_spaced": volume.regularly_spaced,
                "tilt_deg": volume.tilt_deg,
                "part": part.index,
                "parts": part.count,
                "levels": len(meta.levels),
                "labels": [name for name, _ in labels],
                "source_format": "DICOM",
                **subject_fields,
            }
        )
        out.bytes_out += _stored_size(store, path)
    for index, seg in enumerate(task.segmentations):
        if index not in used_labels:
            why = next((p.reason for p in label_problems if p.ref == seg.ref), None)
            out.quarantined.append(
                Quarantined(seg.ref, why or f"{seg.modality} fits no volume", series_id)
            )
    if not series_rows:
        out.status = "quarantined"
        out.seconds = time.perf_counter() - t0
        return out
    finish(store, base, out, series_rows, image_rows, annotation_rows)
    out.seconds = time.perf_counter() - t0
    return out


def already_done(
    store: Store, collection: str, out: SeriesOutcome, refs: list[FileRef] | None = None
) -> bool:
    """Whether this run must not write the series; ``out`` then says why.

    ``skipped``: the journal has it (filled from its entry, one read); ``busy``: another run
    holds its claim (:mod:`atlas.ingest.claims`); ``quarantined`` (``refs`` with the reason):
    the series is in another collection of the site (:mod:`atlas.records.ownership`). Otherwise
    the series is claimed for the calling task and ``False`` is returned.
    """

    def from_journal() -> bool:
        entry = journal.read_entry(store, collection, out.series_id)
        if entry is None:
            return False
        out.status = "skipped"
        out.images = list(entry.get("images", []))
        out.n_images = int(entry.get("n_images", 0))
        return True

    if from_journal():
        return True
    if not claims.take(store, out.series_id):
        out.status, out.status_reason = "busy", claims.BUSY
        return True
    if from_journal():  # another run finished it while we looked
        return True
    why = ownership.refusal(store, out.series_id, collection)
    if why is not None:
        out.status, out.status_reason = "quarantined", why
        out.quarantined.extend(Quarantined(r, why, out.series_id) for r in refs or [])
        return True
    return False


def finish(
    store: Store,
    base: dict[str, Any],
    out: SeriesOutcome,
    series_rows: list[dict[str, Any]],
    image_rows: list[dict[str, Any]],
    annotation_rows: list[dict[str, Any]],
) -> None:
    """Write the staging records, then the journal entry (the last write of a series)."""
    collection, series_id = base["collection"], base["series_id"]
    for table, rows in (
        ("series", series_rows),
        ("images", image_rows),
        ("annotations", annotation_rows),
    ):
        records.write_table(store, table, collection, series_id, rows)
    ownership.record_series(store, series_id, collection)
    out.n_images = len(image_rows)
    out.n_annotations = len(annotation_rows)
    journal.mark_done(
        store,
        collection,
        series_id,
        {
            "series_id": series_id,
            "subject_id": base["subject_id"],
            "study_id": base["study_id"],
            "images": out.images,
            "n_images": out.n_images,
            "n_annotations": out.n_annotations,
        },
    )


def _size(ref: FileRef) -> int:
    try:
        return ref.size()
    except OSError:
        return 0


def _stored_size(store: Store, prefix: str) -> int:
    return store.stored_size(prefix)
