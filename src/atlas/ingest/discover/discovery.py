"""Find every DICOM object (and NIfTI file) in what an operator points ingest at.

Sources may mix directories (walked recursively), single files, DICOMDIR files (their records
are followed to the referenced files; the DICOMDIR itself is an index, not an image), zip
archives (every member is examined; a damaged member is quarantined and the rest goes on) and
NIfTI files (``.nii``, ``.nii.gz``: collected, not parsed here).

Only headers are read (``stop_before_pixels``), by a thread pool. Each header is also checked
for truncation: the declared pixel data must fit in the file (encapsulated fragments are walked
item by item) and native pixel data must be as long as rows x columns x frames x samples says.
Declared sizes are checked before anything is decoded: an image that would decode to more than
the limit (:class:`~atlas.ingest.safe_io.ReadLimits`), or whose pixel data is far longer than
its header declares, is quarantined. Instances are grouped by (Study Instance UID, Series
Instance UID); SEG and RTSTRUCT objects are kept apart. Inputs are opened read-only and never
modified; only regular files are read, and symlinks and DICOMDIR references are followed only
inside the sources (see :mod:`atlas.ingest.safe_io`).

Quarantine reasons never contain identifying values (names, ids, UIDs, dates); they may name
the file path, which is the operator's own and goes only into their local report.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from atlas.errors import NotFound
from atlas.ingest.discover.grouping import group_instances
from atlas.ingest.discover.instances import Archive, Dicomdir, Outcome, examine
from atlas.ingest.discover.sources import (
    ZipCache,
    follow_dicomdir,
    source_key,
    walk,
    zip_members,
)
from atlas.ingest.model import FileRef, InstanceInfo, Quarantined, SeriesGroup
from atlas.ingest.safe_io import ReadLimits

__all__ = ["Discovery", "discover"]


@dataclass
class Discovery:
    """What :func:`discover` found.

    ``files_seen`` counts every object examined (files and zip members, DICOMDIR files
    included; a zip archive itself is not counted, its members are) and ``bytes_seen`` their
    sizes (uncompressed for zip members).
    """

    series: list[SeriesGroup] = field(default_factory=list)
    #: SEG and RTSTRUCT objects (headers only), kept apart from the image series
    segmentations: list[InstanceInfo] = field(default_factory=list)
    nifti: list[FileRef] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    files_seen: int = 0
    bytes_seen: int = 0

    def __repr__(self) -> str:
        return (
            f"Discovery(series={len(self.series)}, segmentations={len(self.segmentations)}, "
            f"nifti={len(self.nifti)}, quarantined={len(self.quarantined)}, "
            f"files_seen={self.files_seen})"
        )


def discover(
    sources: Iterable[str | Path], *, workers: int | None = None, limits: ReadLimits | None = None
) -> Discovery:
    """Find, classify and group every DICOM object and NIfTI file in ``sources``.

    Unusable objects (not DICOM, truncated, corrupt, without pixel data, corrupt zip members,
    files a DICOMDIR names but that are missing, duplicate copies of one SOP instance) are
    quarantined with a reason. Only regular files are read; symlinks (to files or folders)
    found in a source folder are followed only when they resolve inside one of ``sources``,
    and the files a DICOMDIR names only inside the DICOMDIR's folder; anything else is
    quarantined with its reason.

    Parameters
    ----------
    sources : iterable of str or Path
        Directories (walked recursively), files, DICOMDIR files, zip archives and NIfTI
        files, in any mix.
    workers : int, optional
        Size of the header-reading thread pool (default ``min(32, cpu_count + 4)``).
    limits : ReadLimits, optional
        Declared sizes are checked against these before reading further (default
        :class:`ReadLimits`).

    Returns
    -------
    Discovery
        The image series, the SEG/RTSTRUCT objects, the NIfTI files and the quarantine.

    Raises
    ------
    atlas.errors.NotFound
        A source does not exist.
    """
    found = Discovery()
    pending: list[FileRef] = []
    seen: set[tuple[str, str | None]] = set()

    def add(ref: FileRef) -> None:
        key = source_key(ref)
        if key not in seen:
            seen.add(key)
            pending.append(ref)

    paths = [Path(s) for s in sources]
    roots = [str(p) for p in paths if p.exists()]
    refused: list[Quarantined] = []
    for path in paths:
        if path.is_dir():
            for ref in walk(path, roots, refused):
                add(ref)
        elif path.exists():  # regular or not: reading refuses anything but a regular file
            add(FileRef(str(path)))
        else:
            raise NotFound(f"input path does not exist: {path}", location=str(path))
    found.quarantined.extend(refused)
    found.files_seen += len(refused)
    limits = limits or ReadLimits()

    instances: list[InstanceInfo] = []
    zips = ZipCache()
    max_workers = workers or min(32, (os.cpu_count() or 1) + 4)
    try:
        with ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="atlas-discover"
        ) as pool:
            while pending:
                batch, pending = pending, []
                for ref, outcome in zip(
                    batch, pool.map(lambda r: examine(r, zips, limits), batch), strict=True
                ):
                    _collect(ref, outcome, found, instances, zips, add)
    finally:
        zips.close()
    series, segmentations, duplicates = group_instances(instances)
    found.series = series
    found.segmentations.extend(segmentations)
    found.quarantined.extend(duplicates)
    found.nifti.sort(key=lambda r: r.display)
    found.quarantined.sort(key=lambda q: q.ref.display)
    return found


def _collect(
    ref: FileRef,
    outcome: Outcome,
    found: Discovery,
    instances: list[InstanceInfo],
    zips: ZipCache,
    add: Callable[[FileRef], None],
) -> None:
    result = outcome.result
    if not isinstance(result, Archive):
        found.files_seen += 1
        found.bytes_seen += outcome.size
    if result is None:
        found.nifti.append(ref)
    elif isinstance(result, InstanceInfo):
        instances.append(result)
    elif isinstance(result, Quarantined):
        found.quarantined.append(result)
    elif isinstance(result, Archive):
        try:
            zf, lock = zips.get(ref.path)
            with lock:
                members = zip_members(zf)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            found.files_seen += 1
            found.quarantined.append(
                Quarantined(ref, f"not a readable zip archive ({exc.__class__.__name__})")
            )
            return
        for member in members:
            add(FileRef(ref.path, member))
    elif isinstance(result, Dicomdir):
        follow_dicomdir(result.ref, result.file_ids, found.quarantined, zips, add)
