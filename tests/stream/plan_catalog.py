"""A small real catalog for the stream tests: synthetic studies, ingested, indexed.

Each subject is one synthetic CT study (:func:`atlas.testing.synthetic.make_study`) with its
DICOM SEG, ingested into a site's store and indexed by :func:`atlas.index.build_index`: real
images, real label images, real annotation rows. Studies are small (a few 16 x 32 x 32
volumes), so building a catalog takes a few seconds; tests build it once per module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atlas import records
from atlas.index.build import build_index
from atlas.ingest.driver import ingest
from atlas.ingest.series import IngestOptions
from atlas.privacy import consent
from atlas.storage import Store, open_store
from atlas.testing.synthetic import make_study

SECRET_ENV = "ATLAS_TEST_STREAM_SITE_SECRET"
SECRET = "stream-test-site-key-not-for-production-0123"
SHAPE = (16, 32, 32)


@dataclass
class Catalog:
    """Stores per site, and per image path its truth label map and subject id."""

    stores: dict[str, Store]
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    subject: dict[str, str] = field(default_factory=dict)
    site_of: dict[str, str] = field(default_factory=dict)

    def subjects(self, site: str | None = None) -> list[str]:
        return sorted({s for p, s in self.subject.items() if site in (None, self.site_of[p])})


def build_catalog(
    root: Path,
    sites: dict[str, int],
    *,
    shape: tuple[int, int, int] = SHAPE,
    collection: str = "liver-ct",
    scopes: tuple[str, ...] = ("research", "ai-training"),
    seed: int = 0,
) -> Catalog:
    """Ingest ``sites[name]`` synthetic subjects into each site's store and build its index."""
    os.environ[SECRET_ENV] = SECRET
    options = IngestOptions(secret_env=SECRET_ENV)
    cat = Catalog({})
    for s_i, (site, n) in enumerate(sites.items()):
        store = open_store(root / site, site=site)
        cat.stores[site] = store
        for i in range(n):
            k = seed + 100 * s_i + i
            study = make_study(
                root / "studies" / f"{site}-{i}", shape=shape, seed=k, patient_id=f"P-{site}-{i}",
                with_rtstruct=False, with_nifti=False, n_tumours=1 + i % 2,
            )  # fmt: skip
            summary = ingest(
                [str(study.ct_files[0].parent), str(study.seg_file)], store=store, site=site,
                collection=collection, labels=[], scheduler="synchronous", options=options,
            )  # fmt: skip
            (path,) = summary.images
            cat.truth[path] = study.truth_labels
            cat.site_of[path] = site
        consent.set_collection_default(store, collection, scopes)
        for row in records.read_table(store, "series").to_pylist():
            cat.subject[row["image_path"]] = row["subject_id"]
        build_index(store)
    return cat


def truth_boxes(truth: np.ndarray) -> dict[int, tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Label value → (start, stop, voxels) of its 3-D bounding box, from the truth map."""
    out = {}
    for value in np.unique(truth):
        if value == 0:
            continue
        where = np.nonzero(truth == value)
        start = tuple(int(a.min()) for a in where)
        stop = tuple(int(a.max()) + 1 for a in where)
        out[int(value)] = (start, stop, int(where[0].size))
    return out


def table_from(
    shapes: list[tuple[int, int, int]],
    boxes: list[tuple[int, str, tuple[int, int, int], tuple[int, int, int], int]] = (),  # type: ignore[assignment]
    *,
    sites: int = 1,
    levels: int = 1,
):
    """A :class:`VolumeTable` of volumes of ``shapes`` (no catalog: for fast sampler tests).

    ``boxes``: ``(volume, label name, start, stop, voxels)``. Subject ``i`` owns volume ``i``;
    volumes alternate between ``sites`` sites.
    """
    import pyarrow as pa

    from atlas.stream import VolumeTable

    n = len(shapes)
    path = [f"c/s{i:05d}/study/series{i:05d}.ome.zarr" for i in range(n)]
    site = [f"site-{i % sites}" for i in range(n)]
    vols = pa.table(
        {
            "site": site, "collection": ["c"] * n, "subject_id": [f"s{i:05d}" for i in range(n)],
            "series_id": [f"series{i:05d}" for i in range(n)], "volume": [0] * n,
            "image_path": path, "size_z": [s[0] for s in shapes],
            "size_y": [s[1] for s in shapes], "size_x": [s[2] for s in shapes],
            "spacing_z": [1.5] * n, "spacing_y": [0.7] * n, "spacing_x": [0.7] * n,
            "levels": [levels] * n, "channels": [1] * n, "labels": [["seg-1"]] * n,
        }
    )  # fmt: skip
    rows = list(boxes)
    values = {name: i + 1 for i, name in enumerate(sorted({b[1] for b in rows}))}
    box_t = pa.table(
        {
            "site": [site[b[0]] for b in rows], "series_id": [f"series{b[0]:05d}" for b in rows],
            "volume": [0] * len(rows), "label_image": ["seg-1"] * len(rows),
            "label_value": [values[b[1]] for b in rows],
            "label_name": [b[1] for b in rows],
            "z0": [b[2][0] for b in rows], "z1": [b[3][0] for b in rows],
            "y0": [b[2][1] for b in rows], "y1": [b[3][1] for b in rows],
            "x0": [b[2][2] for b in rows], "x1": [b[3][2] for b in rows],
            "voxels": [b[4] for b in rows],
        },
        schema=pa.schema(
            [("site", pa.string()), ("series_id", pa.string()), ("volume", pa.int64()),
             ("label_image", pa.string()), ("label_value", pa.int64()),
             ("label_name", pa.string())] + [(c, pa.int64()) for c in
                                             ("z0", "z1", "y0", "y1", "x0", "x1", "voxels")]
        ),
    )  # fmt: skip
    return VolumeTable.from_arrow(vols, box_t)
