"""Staging records: what ingest hands to the index (one Parquet object per series and table).

Three tables, written under ``_staging/<table>/<collection>/<series_id>.parquet``:

- ``series``: one row per volume;
- ``images``: one row per 2-D image (slice or frame);
- ``annotations``: one row per label per image (label, code, source, voxel count, bounding box).

Every row carries its site, collection and pseudonymous subject/study/series ids and where its
pixels live. Only pseudonymous and de-identified values are ever put in a record.
:mod:`atlas.index.build` compacts these objects into the sharded index.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atlas.storage import Store

STAGING_PREFIX = "_staging"
TABLES = ("series", "images", "annotations")
RECORD_VERSION = 1


def staging_key(table: str, collection: str, series_id: str) -> str:
    """Where the staging object of ``table`` for one series lives."""
    return f"{STAGING_PREFIX}/{table}/{collection}/{series_id}.parquet"


def schemas() -> dict[str, Any]:
    """The pyarrow schema of each staging table."""
    import pyarrow as pa

    ids = [
        ("site", pa.string()),
        ("collection", pa.string()),
        ("subject_id", pa.string()),
        ("study_id", pa.string()),
        ("series_id", pa.string()),
    ]
    return {
        "series": pa.schema(
            [
                *ids,
                ("volume", pa.int32()),
                ("image_store", pa.string()),
                ("image_path", pa.string()),
                ("modality", pa.string()),
                ("body_part", pa.string()),
                ("manufacturer", pa.string()),
                ("model", pa.string()),
                ("sex", pa.string()),
                ("age_years", pa.float32()),
                ("acquisition_date", pa.string()),
                ("slice_thickness", pa.float32()),
                ("spacing_z", pa.float32()),
                ("spacing_y", pa.float32()),
                ("spacing_x", pa.float32()),
                ("size_z", pa.int32()),
                ("size_y", pa.int32()),
                ("size_x", pa.int32()),
                ("channels", pa.int32()),
                ("dtype", pa.string()),
                ("regularly_spaced", pa.bool_()),
                # gantry tilt (degrees) of a stack written with a sheared affine, else null
                ("tilt_deg", pa.float32()),
                # part k of n of a series split where its slices are not evenly spaced
                ("part", pa.int32()),
                ("parts", pa.int32()),
                ("levels", pa.int32()),
                ("labels", pa.list_(pa.string())),
                ("source_format", pa.string()),
                ("record_version", pa.int32()),
                # how the subject was found (atlas.ingest.subjects), and whether this is one
                # patient's part of a series that named several
                ("subject_source", pa.string()),
                ("split_by_subject", pa.bool_()),
            ]
        ),
        "images": pa.schema(
            [
                *ids,
                ("volume", pa.int32()),
                ("image_id", pa.string()),
                ("sop_instance_id", pa.string()),
                ("frame", pa.int32()),
                ("z_index", pa.int32()),
                ("position_mm", pa.float32()),
                ("image_path", pa.string()),
                ("modality", pa.string()),
                ("rows", pa.int32()),
                ("columns", pa.int32()),
                ("annotated", pa.bool_()),
            ]
        ),
        "annotations": pa.schema(
            [
                *ids,
                ("volume", pa.int32()),
                ("annotation_id", pa.string()),
                ("image_id", pa.string()),
                ("z_index", pa.int32()),
                ("label_image", pa.string()),
                ("label_value", pa.int32()),
                ("label_name", pa.string()),
                ("label_cleaned", pa.bool_()),
                ("code_scheme", pa.string()),
                ("code_value", pa.string()),
                ("code_meaning", pa.string()),
                ("source", pa.string()),
                ("voxel_count", pa.int64()),
                ("bbox_y0", pa.int32()),
                ("bbox_x0", pa.int32()),
                ("bbox_y1", pa.int32()),
                ("bbox_x1", pa.int32()),
                ("image_path", pa.string()),
            ]
        ),
    }


def annotation_rows(
    mask: np.ndarray,
    *,
    base: Mapping[str, Any],
    image_ids: Sequence[str],
    label_image: str,
    names: Mapping[int, str],
    codes: Mapping[int, Mapping[str, str]],
    source: str,
    cleaned: Mapping[int, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per (slice, label value) present in ``mask`` (z, y, x), with its bounding box.

    ``bbox_*1`` are exclusive ends, in voxel indices of level 0. ``names`` and ``codes`` must
    be de-identified (:func:`atlas.ingest.label_text.deidentify_labels`); ``label_cleaned``
    says whether that changed the value's name or code (``cleaned``).
    """
    rows: list[dict[str, Any]] = []
    for z in range(mask.shape[0]):
        plane = mask[z]
        if not plane.any():
            continue
        for value in np.unique(plane):
            v = int(value)
            if v == 0:
                continue
            ys, xs = np.nonzero(plane == value)
            code = codes.get(v, {})
            rows.append(
                {
                    **base,
                    "annotation_id": f"{image_ids[z]}/{label_image}/{v}",
                    "image_id": image_ids[z],
                    "z_index": z,
                    "label_image": label_image,
                    "label_value": v,
                    "label_name": names.get(v, str(v)),
                    "label_cleaned": bool((cleaned or {}).get(v)),
                    "code_scheme": code.get("scheme"),
                    "code_value": code.get("value"),
                    "code_meaning": code.get("meaning"),
                    "source": source,
                    "voxel_count": int(ys.size),
                    "bbox_y0": int(ys.min()),
                    "bbox_x0": int(xs.min()),
                    "bbox_y1": int(ys.max()) + 1,
                    "bbox_x1": int(xs.max()) + 1,
                }
            )
    return rows


def write_table(
    store: Store, table: str, collection: str, series_id: str, rows: list[dict[str, Any]]
) -> str:
    """Write ``rows`` as the staging object of ``table`` (one atomic PUT); returns its key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schemas()[table]
    columns = {name: [r.get(name) for r in rows] for name in schema.names}
    if "record_version" in columns:
        columns["record_version"] = [RECORD_VERSION] * len(rows)
    arrow = pa.table({n: columns[n] for n in schema.names}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(arrow, buf, compression="zstd")
    key = staging_key(table, collection, series_id)
    store.write_bytes(key, buf.getvalue())
    return key


def read_table(store: Store, table: str, collection: str | None = None) -> Any:
    """Read staging objects of ``table`` (optionally one collection) as one pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prefix = f"{STAGING_PREFIX}/{table}/" + (f"{collection}/" if collection else "")
    parts = [
        pq.read_table(io.BytesIO(store.read_bytes(k)))
        for k in store.list(prefix)
        if k.endswith(".parquet")
    ]
    if not parts:
        return schemas()[table].empty_table()
    return pa.concat_tables(parts, promote_options="default")
