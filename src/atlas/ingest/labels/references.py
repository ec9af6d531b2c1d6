"""The image series and instances a SEG or RTSTRUCT refers to.

They find the volume it was drawn on before any geometry is compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from atlas.dicom.functional_groups import PER_FRAME, functional_group_items
from atlas.ingest.labels.grid import read_label_dataset

__all__ = ["referenced_instance_uids", "referenced_series_uids"]


def referenced_series_uids(ds: Any) -> set[str]:
    """Series Instance UIDs a SEG or RTSTRUCT refers to (path or pydicom Dataset).

    SEG: ``ReferencedSeriesSequence`` (Common Instance Reference) and the series of
    ``StudiesContainingOtherReferencedInstancesSequence``. RTSTRUCT:
    ``ReferencedFrameOfReferenceSequence`` → ``RTReferencedStudySequence`` →
    ``RTReferencedSeriesSequence``. Other objects: their ``ReferencedSeriesSequence``, if any.
    An object that names no series gives an empty set (use :func:`referenced_instance_uids`).
    """
    ds = read_label_dataset(ds, "label")
    out: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence", []):
        if item.get("SeriesInstanceUID"):
            out.add(str(item.SeriesInstanceUID))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        for item in study.get("ReferencedSeriesSequence", []):
            if item.get("SeriesInstanceUID"):
                out.add(str(item.SeriesInstanceUID))
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref_for.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if series.get("SeriesInstanceUID"):
                    out.add(str(series.SeriesInstanceUID))
    return out


def referenced_instance_uids(ds: Any) -> set[str]:
    """SOP Instance UIDs of the images a SEG or RTSTRUCT was drawn on (path or Dataset).

    SEG: ``ReferencedInstanceSequence`` items of its referenced series, and each frame's
    ``DerivationImageSequence`` → ``SourceImageSequence`` (in the frame's functional groups
    or the shared ones, see :func:`~atlas.dicom.functional_groups.functional_group_items`).
    RTSTRUCT: the ``ContourImageSequence`` items of the referenced series and of every
    contour.
    """
    ds = read_label_dataset(ds, "label")
    out: set[str] = set()

    def add(items: Iterable[Any]) -> None:
        for item in items:
            uid = item.get("ReferencedSOPInstanceUID")
            if uid:
                out.add(str(uid))

    for series in ds.get("ReferencedSeriesSequence", []):
        add(series.get("ReferencedInstanceSequence", []))
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            add(series.get("ReferencedInstanceSequence", []))
    # each frame's Derivation Image, from its per-frame item or else the shared one
    for frame in range(max(len(ds.get(PER_FRAME) or []), 1)):
        for der in functional_group_items(ds, "DerivationImageSequence", frame):
            add(der.get("SourceImageSequence", []))
    for ref_for in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in ref_for.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                add(series.get("ContourImageSequence", []))
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            add(contour.get("ContourImageSequence", []))
    return out
