"""Ingest: DICOM and NIfTI series, with their segmentations, into de-identified OME-Zarr images.

:func:`ingest` finds the series in its sources, de-identifies each one, writes its image (and
label images) to the site's store and hands its rows to the index as staging records
(:mod:`atlas.records`); it runs in this process, in local worker processes or on a dask cluster,
and resumes after a crash. :class:`IngestOptions` says where the site key comes from and what to
let through, :class:`SubjectMap` names the subjects the data does not name, and
:class:`IngestSummary` is what a run reports (:func:`write_report` saves it as JSON).

Imported lazily: ``import atlas.ingest`` loads none of the readers.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "IngestOptions": "atlas.ingest.series",
    "IngestSummary": "atlas.ingest.driver",
    "SubjectMap": "atlas.ingest.subjects",
    "ingest": "atlas.ingest.driver",
    "plan": "atlas.ingest.driver",
    "write_report": "atlas.ingest.driver",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.ingest", _EXPORTS, globals())
