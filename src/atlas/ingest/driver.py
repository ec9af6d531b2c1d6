"""Run an ingest: discover → plan one task per series → run them → report.

Where tasks run: by default in this process, one after another (so a plain script that calls
:func:`ingest` starts no processes). ``workers=N`` runs them on a local ``dask.distributed``
cluster of N single-threaded worker processes (decoding and pyramid building use every core;
each worker holds one series at a time; the calling script needs an
``if __name__ == "__main__":`` guard, see :mod:`atlas.ingest.processes`); ``scheduler=ADDRESS``
on a running cluster. ``scheduler="synchronous"`` is the in-process default, by name. The
``atlas ingest`` command starts one worker per core unless ``--workers`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.errors import ConfigError
from atlas.ingest import processes, quiet, subjects
from atlas.ingest.model import FileRef, InstanceInfo, Quarantined
from atlas.ingest.series import (
    IngestOptions,
    Scrubber,
    SeriesOutcome,
    SeriesTask,
    _originals,
    ingest_series,
    make_deidentifier,
)
from atlas.privacy.pseudonyms import SiteKey
from atlas.records import ownership
from atlas.storage import Store

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass
class IngestSummary:
    """The result of one ingest run.

    Pseudonymous ids and counts; operator file paths only in ``quarantined``, which goes to the
    local report, never to the store.
    """

    written: list[SeriesOutcome] = field(default_factory=list)
    skipped: list[SeriesOutcome] = field(default_factory=list)
    failed: list[SeriesOutcome] = field(default_factory=list)
    #: series another run was ingesting at the same time (see :mod:`atlas.ingest.claims`)
    busy: list[SeriesOutcome] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    #: entries of the subject map that matched no input
    subject_map_unused: int = 0
    files_seen: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    #: library warnings seen while reading the originals: fixed descriptions -> counts
    warnings: dict[str, int] = field(default_factory=dict)

    def add_notes(self, notes: dict[str, int]) -> None:
        """Count value-free warning notes (see :mod:`atlas.ingest.quiet`)."""
        for text, n in notes.items():
            self.warnings[text] = self.warnings.get(text, 0) + n

    @property
    def images(self) -> list[str]:
        """Paths of every image written or already present."""
        return [p for o in (*self.written, *self.skipped) for p in o.images]

    def to_json(self) -> dict[str, Any]:
        """The operator's report: counts, images, and every quarantined file with its reason."""
        return {
            "series_written": len(self.written),
            "series_skipped": len(self.skipped),
            "series_failed": len(self.failed),
            "series_busy": len(self.busy),
            "subject_map_unused": self.subject_map_unused,
            "files_seen": self.files_seen,
            "files_quarantined": len(self.quarantined),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "quarantined": [q.to_json() for q in self.quarantined],
            "warnings_seen": sum(self.warnings.values()),
            "warnings": dict(sorted(self.warnings.items())),
        }


def _check_name(kind: str, value: str) -> None:
    if not value or not set(value) <= _NAME_OK or value[0] in "-_":
        raise ConfigError(
            f"{kind} name {value!r} must be lower-case letters, digits, '-' or '_' "
            "(it becomes part of every object path)"
        )


def _safe_ingest(task: SeriesTask) -> SeriesOutcome:
    """Run one series; an unexpected error quarantines the series instead of ending the run."""
    try:
        return ingest_series(task)
    except ConfigError:
        raise
    except Exception as exc:
        scrub = Scrubber(_originals(task.group, task.segmentations))
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        reason = scrub(f"internal error {type(exc).__name__}{at}: {exc}")
        series_id = subjects.ids(SiteKey.from_env(task.options.secret_env), task.group)[2]
        return SeriesOutcome(
            series_id=series_id,
            status="failed",
            n_files=len(task.group.instances),
            quarantined=[Quarantined(i.ref, reason, series_id) for i in task.group.instances],
        )


def _match_segmentations(
    segs: list[InstanceInfo], series_uids: set[str], options: IngestOptions
) -> tuple[dict[str, list[InstanceInfo]], list[Quarantined]]:
    """Assign each SEG/RTSTRUCT to the series it references (original UIDs, in memory)."""
    from atlas.ingest.dicom_io import read_dataset
    from atlas.ingest.labels import referenced_series_uids

    by_series: dict[str, list[InstanceInfo]] = {}
    problems: list[Quarantined] = []
    for seg in segs:
        try:
            ds = read_dataset(seg.ref, stop_before_pixels=True, limits=options.limits)
            refs = referenced_series_uids(ds) & series_uids
        except Exception as exc:
            problems.append(
                Quarantined(seg.ref, f"unreadable {seg.modality}: {type(exc).__name__}")
            )
            continue
        if not refs:
            problems.append(
                Quarantined(seg.ref, f"{seg.modality} references no series among the inputs")
            )
            continue
        for uid in refs:
            by_series.setdefault(uid, []).append(seg)
    return by_series, problems


def run_tasks(
    tasks: Sequence[Any],
    fn: Callable[[Any], Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    on_result: Callable[[Any], None],
) -> None:
    """Run ``fn`` over ``tasks`` on dask (local cluster, remote scheduler or in-process)."""
    if not tasks:
        return
    if scheduler == "synchronous":
        for task in tasks:
            on_result(fn(task))
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="20s")
    else:
        processes.check_can_start_workers()
        n = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            # two malloc arenas: glibc otherwise gives every decoding thread its own heap
            env={"MALLOC_ARENA_MAX": "2"},
        )
        client = Client(cluster)
    try:
        futures = client.map(fn, list(tasks), pure=False)
        for future in as_completed(futures):
            on_result(future.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def plan(
    sources: Iterable[str | os.PathLike[str]],
    *,
    store: Store,
    site: str,
    collection: str,
    labels: Sequence[str | os.PathLike[str]] = (),
    options: IngestOptions | None = None,
    subject_map: subjects.SubjectMap | None = None,
) -> tuple[list[SeriesTask], list[FileRef], IngestSummary]:
    """Discover the inputs and build one task per series (NIfTI images are returned apart).

    A series whose instances name several subjects becomes one task per subject (see
    :mod:`atlas.ingest.subjects`).
    """
    from atlas.ingest.discover import discover

    options = options or IngestOptions()
    _check_name("site", site)
    _check_name("collection", collection)
    make_deidentifier(options)  # fail fast on a missing or weak key, before reading any pixels
    with quiet.collect() as notes:  # library warnings quote original values: count them only
        found = discover([str(s) for s in sources], limits=options.limits)
        series_uids = {g.series_uid for g in found.series}
        by_series, problems = _match_segmentations(found.segmentations, series_uids, options)
    summary = IngestSummary(files_seen=found.files_seen, quarantined=list(found.quarantined))
    summary.add_notes(notes)
    summary.quarantined.extend(problems)
    groups = subjects.assign(found.series, subject_map)
    segs_of, problems = subjects.segmentations_for(groups, by_series, subject_map)
    summary.quarantined.extend(problems)
    if subject_map is not None:
        summary.subject_map_unused = subject_map.unused
    label_refs = [FileRef(str(Path(p))) for p in labels]
    for ref in label_refs:
        if not Path(ref.path).is_file():
            raise ConfigError(f"label file {ref.path} does not exist")
    tasks = [
        SeriesTask(
            store=store,
            site=site,
            collection=collection,
            group=group,
            segmentations=segs_of[id(group)],
            nifti_labels=label_refs,
            options=options,
        )
        for group in groups
    ]
    return tasks, list(found.nifti), summary


def ingest(
    sources: Iterable[str | os.PathLike[str]],
    *,
    store: Store,
    site: str,
    collection: str,
    labels: Sequence[str | os.PathLike[str]] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    options: IngestOptions | None = None,
    progress: Callable[[SeriesOutcome, IngestSummary, int], None] | None = None,
    subject_map: subjects.SubjectMap | str | os.PathLike[str] | None = None,
) -> IngestSummary:
    """Ingest ``sources`` into ``store`` for ``site``/``collection``; see :mod:`atlas.ingest`.

    Runs in this process unless ``workers`` (local worker processes) or ``scheduler`` (a
    running dask cluster) is given. ``subject_map`` (a :class:`~atlas.ingest.subjects.SubjectMap`
    or the path of its CSV file) assigns subjects the data does not name. The store records
    ``site`` at the first ingest and refuses another name later
    (:mod:`atlas.records.ownership`).
    """
    from atlas.ingest.nifti import NiftiTask

    t0 = time.perf_counter()
    options = options or IngestOptions()
    quiet.take_unattributed()  # count only this run's (discovery reads on a thread pool)
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ConfigError(f"workers must be a whole number of at least 1, got {workers!r}")
    if workers is not None and scheduler is not None:
        raise ConfigError("give workers= or scheduler=, not both")
    in_process = scheduler == "synchronous" or (scheduler is None and workers is None)
    if not in_process:
        processes.check_store(store)
    if subject_map is not None and not isinstance(subject_map, subjects.SubjectMap):
        subject_map = subjects.SubjectMap.from_csv(subject_map)
    _check_name("site", site)
    store.ensure_reachable(create=True)
    ownership.check_site(store, site)
    tasks, nifti_images, summary = plan(
        sources,
        store=store,
        site=site,
        collection=collection,
        labels=labels,
        options=options,
        subject_map=subject_map,
    )
    all_tasks: list[Any] = [*tasks]
    label_refs = [FileRef(str(Path(p))) for p in labels]
    all_tasks += [
        NiftiTask(
            store=store,
            site=site,
            collection=collection,
            ref=ref,
            nifti_labels=label_refs,
            options=options,
        )
        for ref in nifti_images
    ]
    total = len(all_tasks)

    if all_tasks:
        ownership.claim_site(store, site)

    def on_result(outcome: SeriesOutcome) -> None:
        bucket = {
            "written": summary.written,
            "skipped": summary.skipped,
            "busy": summary.busy,
        }.get(outcome.status)
        (bucket if bucket is not None else summary.failed).append(outcome)
        summary.quarantined.extend(outcome.quarantined)
        summary.bytes_in += outcome.bytes_in
        summary.bytes_out += outcome.bytes_out
        summary.add_notes(outcome.notes)
        if progress:
            progress(outcome, summary, total)

    run_tasks(
        all_tasks,
        _dispatch,
        workers=workers,
        scheduler="synchronous" if in_process else scheduler,
        on_result=on_result,
    )
    outcomes = (*summary.written, *summary.skipped, *summary.failed)
    used = {p for o in outcomes for p in o.used_masks}
    unreadable = {p: why for o in outcomes for p, why in o.mask_problems.items()}
    if not summary.skipped and not summary.busy:  # those series did not check their masks
        summary.quarantined.extend(
            Quarantined(
                ref,
                unreadable.get(ref.path, "label geometry does not match any image of this run"),
            )
            for ref in label_refs
            if ref.path not in used
        )
    summary.add_notes(quiet.take_unattributed())
    summary.seconds = time.perf_counter() - t0
    return summary


def _dispatch(task: Any) -> SeriesOutcome:
    """Run one task (in a worker process or in-process).

    Library warnings raised while it reads originals become value-free notes on its outcome,
    never printed text.
    """
    from atlas.ingest.nifti import NiftiTask, ingest_nifti

    with quiet.collect() as notes:
        outcome = ingest_nifti(task) if isinstance(task, NiftiTask) else _safe_ingest(task)
    for text, n in notes.items():
        outcome.notes[text] = outcome.notes.get(text, 0) + n
    return outcome


def write_report(summary: IngestSummary, path: str | os.PathLike[str]) -> Path:
    """Write the operator's JSON report (kept local: it names the input files)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


__all__ = ["IngestSummary", "ingest", "plan", "run_tasks", "write_report"]
