"""Grouping the instances discovery found into series (SEG and RTSTRUCT kept apart)."""

from __future__ import annotations

from atlas.ingest.discover.instances import is_segmentation
from atlas.ingest.model import InstanceInfo, Quarantined, SeriesGroup

__all__ = ["group_instances"]


def group_instances(
    instances: list[InstanceInfo],
) -> tuple[list[SeriesGroup], list[InstanceInfo], list[Quarantined]]:
    """Group instances by (Study Instance UID, Series Instance UID).

    Parameters
    ----------
    instances : list of InstanceInfo
        Every readable object discovered (sorted here by display name, in place).

    Returns
    -------
    tuple
        The image series (by study and series UID; instances by Instance Number, then
        name), the SEG and RTSTRUCT objects (kept apart), and the second copies of a SOP
        instance seen twice (quarantined).
    """
    segmentations: list[InstanceInfo] = []
    duplicates: list[Quarantined] = []
    instances.sort(key=lambda i: i.ref.display)
    by_uid: set[str] = set()
    groups: dict[tuple[str, str], SeriesGroup] = {}
    for info in instances:
        if info.sop_instance_uid in by_uid:
            duplicates.append(
                Quarantined(
                    info.ref, "duplicate copy: another input file has the same SOP Instance UID"
                )
            )
            continue
        by_uid.add(info.sop_instance_uid)
        if is_segmentation(info):
            segmentations.append(info)
            continue
        key = (info.study_uid, info.series_uid)
        group = groups.get(key)
        if group is None:
            group = groups[key] = SeriesGroup(info.study_uid, info.series_uid, info.modality)
        group.instances.append(info)
    for group in groups.values():
        group.instances.sort(
            key=lambda i: (
                i.instance_number if i.instance_number is not None else 2**31,
                i.ref.display,
            )
        )
    return [groups[k] for k in sorted(groups)], segmentations, duplicates
