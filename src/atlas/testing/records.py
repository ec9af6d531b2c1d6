"""Generated index records: realistic staging tables without pixels, for tests and benchmarks.

Skewed collection sizes, CT/MR/PET mixes, ~10 % of images annotated, per-subject consent —
everything the index and the catalog need, at any scale, seeded and reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlas import records
from atlas.storage import Store

MODALITIES = ("CT", "MR", "PT")
BODY_PARTS = ("CHEST", "ABDOMEN", "HEAD", "PELVIS", "LIVER")
LABELS = (
    ("liver", "SCT", "10200004", "Liver"),
    ("liver tumour", "SCT", "108369006", "Neoplasm"),
    ("lung nodule", "SCT", "427359005", "Solitary nodule of lung"),
    ("kidney", "SCT", "64033007", "Kidney"),
)


@dataclass(frozen=True)
class GeneratedSite:
    """What was generated for one site (ids are pseudonym-like strings)."""

    site: str
    subjects: list[str]
    collections: list[str]
    n_series: int
    n_images: int
    n_annotations: int


def _id(*parts: Any) -> str:
    return "2.25." + str(
        int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:30], 16)
    )


def subject_name(site: str, i: int) -> str:
    """A pseudonym-like subject id."""
    return hashlib.sha256(f"{site}|{i}".encode()).hexdigest()[:20]


def generate_site(
    store: Store,
    site: str,
    *,
    n_subjects: int = 20,
    series_per_subject: int = 2,
    images_per_series: int = 30,
    annotated_fraction: float = 0.1,
    collections: tuple[str, ...] = ("lung-ct", "liver-ct", "brain-mr"),
    seed: int = 0,
) -> GeneratedSite:
    """Write staging records for ``n_subjects`` subjects of ``site`` (one object per series)."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.6, 0.3, 0.1][: len(collections)] + [0.1] * max(0, len(collections) - 3))
    weights = weights / weights.sum()
    subjects = [subject_name(site, i) for i in range(n_subjects)]
    n_series = n_images = n_annotations = 0
    for subject in subjects:
        collection = collections[int(rng.choice(len(collections), p=weights))]
        sex = "F" if rng.random() < 0.5 else "M"
        age = float(rng.integers(20, 90))
        study = _id(site, subject, "study")
        for k in range(series_per_subject):
            series_id = _id(site, subject, k)
            modality = "MR" if collection.endswith("mr") else MODALITIES[int(rng.integers(0, 2))]
            nz = int(max(1, rng.poisson(images_per_series)))
            path = f"{collection}/{subject}/{study}/{series_id}.ome.zarr"
            base = {"site": site, "collection": collection, "subject_id": subject,
                    "study_id": study, "series_id": series_id, "volume": 0}  # fmt: skip
            series_row = {
                **base, "image_store": store.url, "image_path": path, "modality": modality,
                "body_part": BODY_PARTS[int(rng.integers(0, len(BODY_PARTS)))],
                "manufacturer": ("GE", "SIEMENS", "PHILIPS")[int(rng.integers(0, 3))],
                "model": "synthetic", "sex": sex, "age_years": age,
                "acquisition_date": f"20{rng.integers(10, 24)}0{rng.integers(1, 9)}15",
                "slice_thickness": 1.5, "spacing_z": 1.5, "spacing_y": 0.7, "spacing_x": 0.7,
                "size_z": nz, "size_y": 512, "size_x": 512, "channels": 1,
                "dtype": "int16",
                "regularly_spaced": True, "levels": 2, "labels": ["seg-1"],
                "source_format": "DICOM",
            }  # fmt: skip
            image_rows, note_rows = [], []
            for z in range(nz):
                image_id = f"{_id(series_id, z)}/1"
                annotated = bool(rng.random() < annotated_fraction)
                image_rows.append(
                    {**base, "image_id": image_id, "sop_instance_id": image_id[:-2], "frame": 1,
                     "z_index": z, "position_mm": 1.5 * z, "image_path": path,
                     "modality": modality, "rows": 512, "columns": 512, "annotated": annotated}
                )  # fmt: skip
                if annotated:
                    name, scheme, code, meaning = LABELS[int(rng.integers(0, len(LABELS)))]
                    y0, x0 = int(rng.integers(0, 400)), int(rng.integers(0, 400))
                    h, w = int(rng.integers(5, 100)), int(rng.integers(5, 100))
                    note_rows.append(
                        {**base, "annotation_id": f"{image_id}/seg-1/1", "image_id": image_id,
                         "z_index": z, "label_image": "seg-1", "label_value": 1,
                         "label_name": name, "code_scheme": scheme, "code_value": code,
                         "code_meaning": meaning, "source": "SEG", "voxel_count": h * w // 2,
                         "bbox_y0": y0, "bbox_x0": x0, "bbox_y1": y0 + h, "bbox_x1": x0 + w,
                         "image_path": path}
                    )  # fmt: skip
            records.write_table(store, "series", collection, series_id, [series_row])
            records.write_table(store, "images", collection, series_id, image_rows)
            records.write_table(store, "annotations", collection, series_id, note_rows)
            n_series += 1
            n_images += len(image_rows)
            n_annotations += len(note_rows)
    return GeneratedSite(site, subjects, list(collections), n_series, n_images, n_annotations)
