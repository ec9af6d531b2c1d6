"""``atlas bench index``: the sharded index at atlas scale, against the idc-index way.

Synthetic records (about 600 images per subject, 30 sites with skewed sizes, ~10 % of images
annotated, a body-part column with 1 % and 0.01 % values for selectivity) are written straight
into each site's index format, shard by shard (bounded memory). Then, in the same run:

- point lookups of an image by id (cold: a fresh catalog; warm: repeated), p50/p99;
- filtered counts at 1 % and 0.01 % selectivity over all sites;
- sample-list extraction (ids of a 1 % selection) in rows/s;
- a federated query over all sites;
- the erasure of one subject;
- and the **baseline**: the same images in one unsharded Parquet file, loaded whole into memory
  and queried with DuckDB (what idc-index does with its index table).

Everything is reported as JSON + Markdown + PNG with machine facts and peak memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.report import PlotSpec, print_table, write_report
from atlas.index import layout
from atlas.index.build import MANIFEST_FORMAT, publish
from atlas.storage import Store, open_store

IMAGES_PER_SUBJECT = 600
SERIES_PER_SUBJECT = 2
BODY_PARTS = np.array(["CHEST", "ABDOMEN", "HEAD", "PELVIS", "LIVER", "KNEE"])
BODY_WEIGHTS = np.array([0.45, 0.30, 0.1399, 0.1, 0.01, 0.0001])
COLLECTIONS = np.array(["lung-ct", "liver-ct", "brain-mr", "pelvis-mr", "whole-body-pet"])
LABELS = np.array(["liver", "liver tumour", "lung nodule", "kidney"])


def _site_sizes(total_images: int, n_sites: int, rng: np.random.Generator) -> list[int]:
    weights = 1.0 / np.arange(1, n_sites + 1) ** 0.8  # a few big providers, a long tail
    weights = weights / weights.sum()
    sizes = np.floor(weights * total_images).astype(np.int64)
    sizes[0] += total_images - sizes.sum()
    return [int(s) for s in sizes]


def _hexids(prefix: str, n: int, salt: str) -> Any:
    import pyarrow as pa

    base = hashlib.sha256(salt.encode()).hexdigest()[:8]
    return pa.array([f"{prefix}{base}{i:08x}" for i in range(n)])


def _write_site(store: Store, site: str, n_images: int, seed: int) -> dict[str, Any]:
    """Write one site's index (all tables, every shard) and publish it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_subjects = max(1, n_images // IMAGES_PER_SUBJECT)
    n_shards = layout.shard_count(n_images)
    subjects = _hexids("s", n_subjects, site).to_pylist()
    shard_of = np.array([layout.shard_of(s, n_shards) for s in subjects])
    per_subject = np.full(n_subjects, n_images // n_subjects)
    per_subject[: n_images - per_subject.sum()] += 1
    version = layout.version_name(1)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "parent": None,
        "site": site,
        "created_unix": int(time.time()),
        "n_shards": n_shards,
        "tables": {},
    }
    entries: dict[str, list[dict[str, Any]]] = {t: [] for t in layout.TABLES}
    for shard in range(n_shards):
        idx = np.nonzero(shard_of == shard)[0]
        counts = per_subject[idx]
        rows = int(counts.sum())
        subj = pa.array([subjects[i] for i in idx]).take(
            pa.array(np.repeat(np.arange(idx.size), counts))
        )
        half = (
            np.concatenate([np.arange(c) * SERIES_PER_SUBJECT // max(c, 1) for c in counts])
            if rows
            else np.zeros(0, np.int64)
        )
        # slice number within its series, and the number of slices of that series
        z, series_len = _series_positions(counts, half)
        series = pc.binary_join_element_wise(subj, pa.array(half.astype(str)), "-")
        image_id = pc.binary_join_element_wise(series, pa.array(z.astype(str)), "/")
        collection = COLLECTIONS[rng.integers(0, COLLECTIONS.size, idx.size)]
        body = BODY_PARTS[rng.choice(BODY_PARTS.size, size=rows, p=BODY_WEIGHTS)]
        annotated = rng.random(rows) < 0.1
        label = LABELS[rng.integers(0, LABELS.size, rows)]
        labels = pa.array(
            [[lab] if a else [] for a, lab in zip(annotated, label, strict=True)],
            type=pa.list_(pa.string()),
        )
        consent = pa.array([["research", "ai-training"]] * rows, type=pa.list_(pa.string()))
        images = pa.table(
            {
                "site": pa.array([site] * rows),
                "collection": np.repeat(collection, counts),
                "subject_id": subj,
                "study_id": subj,
                "series_id": series,
                "volume": np.zeros(rows, np.int32),
                "image_id": image_id,
                "sop_instance_id": image_id,
                "frame": np.ones(rows, np.int32),
                "z_index": z.astype(np.int32),
                "position_mm": (z * 1.5).astype(np.float32),
                "image_path": pc.binary_join_element_wise(
                    series, pa.array(["ome.zarr"] * rows), "."
                ),
                "modality": np.repeat(np.where(collection == "brain-mr", "MR", "CT"), counts),
                "rows": np.full(rows, 512, np.int32),
                "columns": np.full(rows, 512, np.int32),
                "annotated": annotated,
                "labels": labels,
                "body_part": body,
                "sex": np.repeat(np.where(rng.random(idx.size) < 0.5, "F", "M"), counts),
                "age_years": np.repeat(rng.integers(20, 90, idx.size).astype(np.float32), counts),
                "manufacturer": np.repeat(
                    np.array(["GE", "SIEMENS"])[rng.integers(0, 2, idx.size)], counts
                ),
                "consent": consent,
            }
        )
        mask = pa.array(annotated)
        notes = images.filter(mask).select(
            [
                "site",
                "collection",
                "subject_id",
                "study_id",
                "series_id",
                "volume",
                "image_id",
                "z_index",
                "image_path",
                "modality",
                "consent",
            ]
        )
        notes = notes.append_column(
            "annotation_id",
            pc.binary_join_element_wise(
                notes["image_id"], pa.array(["seg-1/1"] * notes.num_rows), "/"
            ),
        )
        names = pc.list_flatten(images.filter(mask)["labels"])
        notes = notes.append_column("label_name", names)
        notes = notes.append_column("voxel_count", pa.array(rng.integers(10, 5000, notes.num_rows)))
        notes = _with_label_boxes(notes, names, rng)
        first = pc.equal(images["z_index"], 0)
        series_t = images.filter(first).select(
            [
                "site",
                "collection",
                "subject_id",
                "study_id",
                "series_id",
                "volume",
                "image_path",
                "modality",
                "body_part",
                "sex",
                "age_years",
                "manufacturer",
                "consent",
            ]
        )
        series_t = _with_volume_columns(series_t, series_len[np.asarray(first)])
        for table, data in (("series", series_t), ("images", images), ("annotations", notes)):
            import io

            buf = io.BytesIO()
            pq.write_table(data, buf, compression="zstd", row_group_size=65_536)
            raw = buf.getvalue()
            key = layout.shard_key(version, table, shard, n_shards)
            store.write_bytes(key, raw)
            entries[table].append(
                {
                    "shard": shard,
                    "key": key,
                    "rows": data.num_rows,
                    "bytes": len(raw),
                    "sha256": hashlib.sha256(raw).hexdigest(),
                    "stats": {},
                }
            )
    for table in layout.TABLES:
        manifest["tables"][table] = {
            "rows": sum(e["rows"] for e in entries[table]),
            "bytes": sum(e["bytes"] for e in entries[table]),
            "shards": entries[table],
        }
    publish(store, manifest, None)
    return {
        "subjects": subjects,
        "shards": n_shards,
        "bytes": sum(manifest["tables"][t]["bytes"] for t in layout.TABLES),
    }


def _series_positions(counts: Any, half: Any) -> tuple[Any, Any]:
    """Per image row: its slice number within its series, and that series' slice count."""
    z = np.empty(half.size, dtype=np.int64)
    length = np.empty(half.size, dtype=np.int64)
    at = 0
    for c in counts:
        h = half[at : at + c]
        first = np.searchsorted(h, h)  # index of each series' first slice (h is sorted)
        z[at : at + c] = np.arange(c) - first
        length[at : at + c] = np.bincount(h)[h]
        at += c
    return z, length


def _with_volume_columns(series: Any, size_z: Any) -> Any:
    """The series table's geometry columns (what a training plan reads): 512 x 512 CT."""
    import pyarrow as pa

    n = series.num_rows
    extra = {
        "size_z": pa.array(size_z.astype(np.int32)),
        "size_y": pa.array(np.full(n, 512, np.int32)),
        "size_x": pa.array(np.full(n, 512, np.int32)),
        "spacing_z": pa.array(np.full(n, 1.5, np.float32)),
        "spacing_y": pa.array(np.full(n, 0.7, np.float32)),
        "spacing_x": pa.array(np.full(n, 0.7, np.float32)),
        "levels": pa.array(np.full(n, 2, np.int32)),
        "channels": pa.array(np.ones(n, np.int32)),
        "dtype": pa.array(["int16"] * n),
        "labels": pa.array([["seg-1"]] * n, type=pa.list_(pa.string())),
    }
    for name, column in extra.items():
        series = series.append_column(name, column)
    return series


def _with_label_boxes(notes: Any, names: Any, rng: np.random.Generator) -> Any:
    """Label image, value and per-slice bounding box of each annotation row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = notes.num_rows
    value = pc.index_in(names, pa.array(LABELS)).to_numpy(zero_copy_only=False) + 1
    y0, x0 = rng.integers(0, 400, n), rng.integers(0, 400, n)
    h, w = rng.integers(5, 100, n), rng.integers(5, 100, n)
    extra = {
        "label_image": pa.array(["seg-1"] * n),
        "label_value": pa.array(value.astype(np.int32)),
        "bbox_y0": pa.array(y0.astype(np.int32)),
        "bbox_x0": pa.array(x0.astype(np.int32)),
        "bbox_y1": pa.array((y0 + h).astype(np.int32)),
        "bbox_x1": pa.array((x0 + w).astype(np.int32)),
    }
    for name, column in extra.items():
        notes = notes.append_column(name, column)
    return notes


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return p50 * 1000, p99 * 1000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    out: Path, images: int = 1_000_000, sites: int = 30, lookups: int = 200, seed: int = 0
) -> dict[str, Path]:
    """Generate, measure, compare; write the report."""
    import duckdb
    import pyarrow.parquet as pq

    from atlas.index.catalog import open_atlas
    from atlas.index.erase import erase_subject
    from atlas.privacy.pseudonyms import SiteKey

    rng = np.random.default_rng(seed)
    work = Path(tempfile.mkdtemp(prefix="atlas-bench-index-"))
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"images": images, "sites": sites, "lookups": lookups}
    try:
        sizes = _site_sizes(images, sites, rng)
        stores = {
            f"site-{i:02d}": open_store(work / f"site-{i:02d}", site=f"site-{i:02d}")
            for i in range(sites)
        }
        t0 = time.perf_counter()
        written = {
            name: _write_site(st, name, n, seed + i)
            for i, ((name, st), n) in enumerate(zip(stores.items(), sizes, strict=True))
        }
        build_s = time.perf_counter() - t0
        on_disk = sum(w["bytes"] for w in written.values())
        meta.update(
            build_seconds=build_s,
            bytes_on_disk=on_disk,
            peak_rss_mb_after_build=_peak_mb(),
            shards_per_site={k: w["shards"] for k, w in written.items()},
        )
        rows.append(
            {"measure": "build (write all shards + publish)", "atlas": build_s, "unit": "s"}
        )

        # point lookups
        big = next(iter(stores))
        ids = [
            f"{written[big]['subjects'][int(i)]}-0/{int(z)}"
            for i, z in zip(
                rng.integers(0, len(written[big]["subjects"]), lookups),
                rng.integers(0, 200, lookups),
                strict=True,
            )
        ]
        cold = []
        for image_id in ids[:20]:
            t = time.perf_counter()
            open_atlas({big: stores[big]}, purpose="research").get("images", image_id=image_id)
            cold.append(time.perf_counter() - t)
        atlas_one = open_atlas({big: stores[big]}, purpose="research")
        warm = []
        for image_id in ids:
            t = time.perf_counter()
            atlas_one.get("images", image_id=image_id)
            warm.append(time.perf_counter() - t)
        atlas = open_atlas(stores, purpose="research")
        t = time.perf_counter()
        total = atlas.images.count().value
        fed_s = time.perf_counter() - t
        sel = {}
        for name, value in (("1%", "LIVER"), ("0.01%", "KNEE")):
            times = []
            for _ in range(3):
                t = time.perf_counter()
                n = atlas.images.where(body_part=value).count().value
                times.append(time.perf_counter() - t)
            sel[name] = (statistics.median(times), n)
        t = time.perf_counter()
        extracted = 0
        sample_list = atlas.images.where(body_part="LIVER").select(
            "image_id", "image_path", "z_index"
        )
        for batch in sample_list.iter_batches():
            extracted += batch.num_rows
        extract_s = time.perf_counter() - t
        # baseline: one unsharded file, loaded whole, DuckDB over it (the idc-index way)
        single = work / "all-images.parquet"
        writer = None
        for st in stores.values():
            for key in st.list("_index/versions/v000001/images/"):
                part = pq.read_table(os.path.join(st.location.root, key)).drop_columns(["consent"])
                if writer is None:
                    writer = pq.ParquetWriter(single, part.schema, compression="zstd")
                writer.write_table(part)
        assert writer is not None
        writer.close()
        before = _peak_mb()
        t = time.perf_counter()
        whole = pq.read_table(single)
        con = duckdb.connect()
        con.register("idx", whole)
        base_load = time.perf_counter() - t
        base_mem = max(_peak_mb() - before, whole.nbytes / 1e6)
        base_look = []
        for image_id in ids[: min(len(ids), 20)]:  # each one scans the whole table
            t = time.perf_counter()
            con.execute("SELECT * FROM idx WHERE image_id = ?", [image_id]).fetchall()
            base_look.append(time.perf_counter() - t)
        base_sel = {}
        for name, value in (("1%", "LIVER"), ("0.01%", "KNEE")):
            t = time.perf_counter()
            con.execute("SELECT count(*) FROM idx WHERE body_part = ?", [value]).fetchall()
            base_sel[name] = time.perf_counter() - t
        t = time.perf_counter()
        con.sql(
            "SELECT image_id, image_path, z_index FROM idx WHERE body_part = 'LIVER'"
        ).to_arrow_table()
        base_extract = time.perf_counter() - t
        # erasure of one subject at the biggest site
        victim = written[big]["subjects"][1]
        t = time.perf_counter()
        erase_subject(stores[big], victim, key=SiteKey(os.urandom(32)))  # a throw-away site
        erase_s = time.perf_counter() - t

        c50, c99 = _percentiles(cold)
        w50, w99 = _percentiles(warm)
        b50, b99 = _percentiles(base_look)
        rows += [
            {
                "measure": "point lookup p50, cold (fresh catalog)",
                "atlas": c50,
                "baseline": None,
                "unit": "ms",
            },
            {"measure": "point lookup p99, cold", "atlas": c99, "baseline": None, "unit": "ms"},
            {"measure": "point lookup p50, warm", "atlas": w50, "baseline": b50, "unit": "ms"},
            {"measure": "point lookup p99, warm", "atlas": w99, "baseline": b99, "unit": "ms"},
            {
                "measure": "count, 1% selectivity",
                "atlas": sel["1%"][0] * 1000,
                "baseline": base_sel["1%"] * 1000,
                "unit": "ms",
            },
            {
                "measure": "count, 0.01% selectivity",
                "atlas": sel["0.01%"][0] * 1000,
                "baseline": base_sel["0.01%"] * 1000,
                "unit": "ms",
            },
            {
                "measure": "sample list (1% of images), rows/s",
                "atlas": extracted / extract_s,
                "baseline": sel["1%"][1] / base_extract,
                "unit": "rows/s",
            },
            {
                "measure": f"federated count over {sites} sites",
                "atlas": fed_s * 1000,
                "baseline": None,
                "unit": "ms",
            },
            {"measure": "erase one subject", "atlas": erase_s, "baseline": None, "unit": "s"},
            {
                "measure": "load before first query",
                "atlas": 0.0,
                "baseline": base_load,
                "unit": "s",
            },
            {"measure": "memory to query", "atlas": None, "baseline": base_mem, "unit": "MB"},
        ]
        meta.update(
            total_images=total,
            rows_1pct=sel["1%"][1],
            rows_001pct=sel["0.01%"][1],
            baseline_file_bytes=single.stat().st_size,
            peak_rss_mb=_peak_mb(),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r.setdefault("baseline", None)
        a, b = r.get("atlas"), r.get("baseline")
        if isinstance(a, int | float) and isinstance(b, int | float) and a and b:
            r["ratio (baseline/atlas)"] = (a / b) if r["unit"] == "rows/s" else (b / a)
    columns = ["measure", "atlas", "baseline", "unit", "ratio (baseline/atlas)"]
    title = f"Atlas index benchmark: {images:,} images, {sites} sites"
    print_table(rows, columns, title)
    return write_report(
        out,
        "index",
        rows,
        columns,
        title,
        json.loads(json.dumps(meta, default=str)),
        PlotSpec(x="measure", y=["atlas", "baseline"], ylabel="value (see unit)", log=True),
    )
