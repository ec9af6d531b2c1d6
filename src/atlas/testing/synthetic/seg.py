"""The synthetic DICOM SEG (highdicom, BINARY): segments ``liver`` and ``liver tumour``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.testing.synthetic.identity import _add_private_block, _Identity
from atlas.testing.synthetic.model import LABEL_NAMES, LABEL_RGB


def _write_seg(
    path: Path, *, ident: _Identity, uids: dict[str, str], headers: list[Any], truth: np.ndarray
) -> None:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    v, d, t = ident.values, ident.dates, ident.times
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=LABEL_NAMES[1],
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_RGB[1]),
        ),
        hd.seg.SegmentDescription(
            segment_number=2,
            segment_label=LABEL_NAMES[2],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[codes.SCT.Liver],
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_RGB[2]),
        ),
    ]
    seg: Any = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=truth,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids["seg_series"],
        series_number=3,
        sop_instance_uid=uids["seg_sop"],
        instance_number=1,
        manufacturer="Atlas Synthetic",
        manufacturer_model_name="Phantom SEG",
        software_versions="1",
        device_serial_number=v["DeviceSerialNumber"],
        content_description="synthetic liver segmentation",
        content_creator_name=v["ContentCreatorName"] + "^",
        content_label="LIVER",
    )
    # highdicom stamps "now"; keep the file reproducible and the dates canaries
    seg.SeriesDescription = v["SegSeriesDescription"]
    seg.SeriesDate = d["StudyDate"]
    seg.SeriesTime = t["SeriesTime"]
    seg.ContentDate = d["StudyDate"]
    seg.ContentTime = t["ContentTime"]
    seg.InstanceCreationDate = d["InstanceCreationDate"]
    seg.InstanceCreationTime = t["InstanceCreationTime"]
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = d["InstanceCreationDate"] + t["InstanceCreationTime"]
    for seq in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(seq, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = uids["seg_dim"]
    seg.InstitutionName = v["InstitutionName"]
    seg.InstitutionAddress = v["InstitutionAddress"]
    seg.OperatorsName = v["OperatorsName"]
    _add_private_block(seg, ident)
    seg.save_as(path, enforce_file_format=True)
