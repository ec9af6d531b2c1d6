"""The training plan at atlas scale: plan an epoch from the index of ``atlas bench index``.

Builds the same synthetic 30-site index as :mod:`atlas.bench.index` (or reuses one kept from an
earlier run), then, each in a fresh process so that peak memory is the planner's own:

- **atlas**: :func:`atlas.stream.plan_epochs` (aggregated series + annotations tables), an
  :class:`~atlas.stream.EpochPlan` of a balanced sampler, and the first sample's metadata;
- **baseline**: what a plan built by listing image rows does — every image row's
  ``(site, series_id, volume, z_index)`` fetched from the catalog and grouped in memory.

Reports time to plan, time to the first sample's metadata and peak RSS (median and spread over
repeats), plus the shuffle's cost and quality on the planned epoch.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.index import _site_sizes, _write_site
from atlas.bench.report import PlotSpec, print_table, write_report
from atlas.storage import open_store

__all__ = ["build", "measure", "run"]


def build(root: Path, images: int, sites: int, seed: int = 0) -> float:
    """Write the synthetic index of ``images`` images over ``sites`` sites under ``root``."""
    from atlas.privacy import consent

    rng = np.random.default_rng(seed)
    sizes = _site_sizes(images, sites, rng)
    t0 = time.perf_counter()
    for i, n in enumerate(sizes):
        name = f"site-{i:02d}"
        store = open_store(root / name, site=name)
        _write_site(store, name, n, seed + i)
        for c in ("lung-ct", "liver-ct", "brain-mr", "pelvis-mr", "whole-body-pet"):
            consent.set_collection_default(store, c, ["research", "ai-training"])
    (root / "BUILT.json").write_text(json.dumps({"images": images, "sites": sites}))
    return time.perf_counter() - t0


def _stores(root: Path) -> dict[str, Any]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("site-"))
    return {n: open_store(root / n, site=n) for n in names}


def measure(root: Path, mode: str) -> dict[str, Any]:
    """One measurement in this process (call it in a fresh one): ``atlas`` or ``baseline``."""
    from atlas.index.catalog import open_atlas

    t0 = time.perf_counter()
    atlas = open_atlas(_stores(root), purpose="ai-training")
    t_open = time.perf_counter() - t0
    out: dict[str, Any] = {"mode": mode, "open_s": t_open}
    if mode == "atlas":
        from atlas.stream import BalancedSampler, EpochPlan, plan_epochs

        t = time.perf_counter()
        table = plan_epochs(atlas, subset="train")
        out["plan_s"] = time.perf_counter() - t
        t = time.perf_counter()
        sampler = BalancedSampler(64, labels=["liver tumour"], positive=0.5, per_volume=4)
        epoch = EpochPlan(table, sampler, seed=0, epoch=0)
        first = epoch[0]
        volume = epoch.volumes[first.volume]
        out["first_sample_s"] = time.perf_counter() - t
        out["first_total_s"] = t_open + out["plan_s"] + out["first_sample_s"]
        out.update(
            volumes=len(table),
            boxes=len(table.box_volume),
            samples=len(epoch),
            first=[volume.site, list(first.start), list(first.size)],
        )
    else:
        import pyarrow as pa
        import pyarrow.compute as pc

        t = time.perf_counter()
        rows = atlas.images.select("site", "series_id", "volume", "z_index").to_arrow().value
        grouped = rows.group_by(["site", "series_id", "volume"]).aggregate(
            [("z_index", "min"), ("z_index", "max")]
        )
        out["plan_s"] = time.perf_counter() - t
        t = time.perf_counter()
        order = pc.sort_indices(grouped, [("site", "ascending"), ("series_id", "ascending")])
        first_row = grouped.take(pa.array(order[:1])).to_pylist()[0]
        out["first_sample_s"] = time.perf_counter() - t
        out["first_total_s"] = t_open + out["plan_s"] + out["first_sample_s"]
        out.update(volumes=grouped.num_rows, image_rows=rows.num_rows, first=first_row["site"])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _fresh(root: Path, mode: str) -> dict[str, Any]:
    code = (
        "import json, sys; from pathlib import Path; from atlas.bench.plan import measure; "
        f"print(json.dumps(measure(Path(sys.argv[1]), {mode!r})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"measurement {mode} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def shuffle_figures(
    n: int, volume_of: np.ndarray, caches: tuple[int, ...] = (64, 256, 1024)
) -> list[dict[str, Any]]:
    """Cost and quality of epoch orders of ``n`` samples (``volume_of``: each one's volume).

    Quality: Spearman's rank correlation with storage order, and how often two neighbouring
    samples share a volume. Read cost: distinct volumes in a window of 1,024 samples (the
    working set a reader's cache must hold) and the miss rate of LRU caches of ``caches``
    volumes (opened images: metadata and shard indexes), over the first 200,000 samples.
    """
    from collections import OrderedDict

    from atlas.stream import EpochOrder, spearman
    from atlas.stream.order import adjacent_same

    rows = []
    head = min(n, 200_000)
    for label, params in ORDERS:
        order = EpochOrder(**params)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            perm = order.permutation(n, 7, 1)
            times.append(time.perf_counter() - t)
        vols = volume_of[perm]
        windows = [np.unique(vols[i : i + 1024]).size for i in range(0, head - 1023, 1024)]
        row: dict[str, Any] = {
            "order": label,
            "spearman": spearman(perm),
            "same volume as previous": adjacent_same(perm, volume_of),
            "volumes per 1024 samples": float(np.mean(windows)) if windows else None,
        }
        for size in caches:
            lru: OrderedDict[int, None] = OrderedDict()
            misses = 0
            for v in vols[:head].tolist():
                if v in lru:
                    lru.move_to_end(v)
                else:
                    misses += 1
                    lru[v] = None
                    if len(lru) > size:
                        lru.popitem(last=False)
            row[f"LRU {size} miss rate"] = misses / head
        row["order time s (median of 3)"] = statistics.median(times)
        rows.append(row)
    return rows


#: the orders compared (label, EpochOrder parameters)
ORDERS = (
    ("storage order", {"shuffle": False}),
    ("buffer 4096 only", {"block": 1 << 40, "buffer": 4096}),
    ("block 8 + buffer 64", {"block": 8, "buffer": 64}),
    ("block 16 + buffer 256 (default)", {"block": 16, "buffer": 256}),
    ("block 32 + buffer 1024", {"block": 32, "buffer": 1024}),
    ("block 32 + buffer 4096", {"block": 32, "buffer": 4096}),
    ("block 128 + buffer 1024", {"block": 128, "buffer": 1024}),
    ("full random", {"block": 1, "buffer": 1}),
)


def read_speed(
    orders: Any = ORDERS,
    *,
    volumes: int = 32,
    shape: tuple[int, int, int] = (32, 64, 64),
    per_volume: int = 16,
    patch: int = 16,
    latency_s: float = 0.005,
    handles: int = 16,
    limit: int = 256,
) -> list[dict[str, Any]]:
    """Patches read in each epoch order from a store with ``latency_s`` per request.

    Real reads (zarr-python through :func:`atlas.ome.open_image`) of ``limit`` samples of an
    epoch of ``per_volume`` random patches per volume; the reader keeps the last ``handles``
    opened images (their metadata and shard indexes), as a real reader's cache does.
    """
    from collections import OrderedDict

    import pyarrow as pa

    from atlas.ome import Layout, open_image, write_image
    from atlas.storage.wrappers import LatencyConfig
    from atlas.stream import EpochOrder, EpochPlan, PatchSampler, VolumeTable

    work = Path(tempfile.mkdtemp(prefix="atlas-bench-order-"))
    try:
        store = open_store(work / "s", site="bench")
        rng = np.random.default_rng(0)
        paths = [f"c/v{i:03d}.ome.zarr" for i in range(volumes)]
        for path in paths:
            data = rng.integers(-1000, 1000, shape, dtype=np.int16)
            write_image(store, path, data, spacing=(1.0, 1.0, 1.0),
                        layout=Layout(chunks=(16, 32, 32), shards=shape))  # fmt: skip
        n = volumes
        table = VolumeTable.from_arrow(
            pa.table(
                {
                    "site": ["bench"] * n, "collection": ["c"] * n,
                    "subject_id": [f"s{i}" for i in range(n)],
                    "series_id": [f"v{i}" for i in range(n)], "volume": [0] * n,
                    "image_path": paths, "size_z": [shape[0]] * n, "size_y": [shape[1]] * n,
                    "size_x": [shape[2]] * n, "spacing_z": [1.0] * n, "spacing_y": [1.0] * n,
                    "spacing_x": [1.0] * n, "levels": [1] * n, "channels": [1] * n,
                    "labels": [[]] * n,
                }
            )
        )  # fmt: skip
        slow = open_store(work / "s", site="bench", latency=LatencyConfig(base=latency_s))
        rows = []
        for label, params in orders:
            epoch = EpochPlan(table, PatchSampler(patch, per_volume=per_volume), seed=1,
                              epoch=0, order=EpochOrder(**params))  # fmt: skip
            specs = epoch.specs(np.arange(min(limit, len(epoch))))
            cache: OrderedDict[str, Any] = OrderedDict()
            opens = 0
            t = time.perf_counter()
            for spec in specs:
                path = paths[spec.volume]
                image = cache.get(path)
                if image is None:
                    image = cache[path] = open_image(slow, path)
                    opens += 1
                    if len(cache) > handles:
                        cache.popitem(last=False)
                cache.move_to_end(path)
                image.read(
                    0, tuple(slice(a, b) for a, b in zip(spec.start, spec.stop, strict=True))
                )
            elapsed = time.perf_counter() - t
            rows.append(
                {
                    "order": label,
                    "spearman (whole epoch)": epoch.order.quality(len(epoch), 1, 0),
                    "samples/s": len(specs) / elapsed,
                    "image opens": opens,
                }
            )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(
    out: Path,
    images: int = 60_000_000,
    sites: int = 30,
    repeats: int = 3,
    keep: Path | None = None,
    baseline: bool = True,
    seed: int = 0,
) -> dict[str, Path]:
    """Build (or reuse ``keep``), measure atlas and baseline in fresh processes, report."""
    work = keep or Path(tempfile.mkdtemp(prefix="atlas-bench-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"images": images, "sites": sites, "repeats": repeats}
    try:
        built = work / "BUILT.json"
        if built.exists() and json.loads(built.read_text()) == {"images": images, "sites": sites}:
            meta["build_seconds"] = None  # reused
        else:
            meta["build_seconds"] = build(work, images, sites, seed)
        runs = {"atlas": [_fresh(work, "atlas") for _ in range(repeats)]}
        if baseline:
            runs["baseline"] = [_fresh(work, "baseline") for _ in range(repeats)]
        rows = []
        for key, unit in (
            ("plan_s", "s"),
            ("first_sample_s", "s"),
            ("first_total_s", "s"),
            ("peak_rss_mb", "MB"),
        ):
            row: dict[str, Any] = {"measure": key, "unit": unit}
            for mode, results in runs.items():
                med, lo, hi = _spread([r[key] for r in results])
                row[mode] = med
                row[f"{mode} range"] = f"{lo:.3g}-{hi:.3g}"
            rows.append(row)
        a = runs["atlas"][0]
        meta.update(volumes=a["volumes"], boxes=a["boxes"], samples=a["samples"], runs=runs)
        from atlas.index.catalog import open_atlas
        from atlas.stream import BalancedSampler, EpochPlan, plan_epochs

        table = plan_epochs(open_atlas(_stores(work), purpose="ai-training"), subset="train")
        epoch = EpochPlan(table, BalancedSampler(64, labels=["liver tumour"], per_volume=4))
        volume_of = np.searchsorted(epoch.plan.offsets, np.arange(len(epoch)), side="right") - 1
        meta["shuffle"] = shuffle_figures(len(epoch), volume_of)
        meta["read_speed"] = read_speed()
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    columns = ["measure", "atlas", "atlas range", "baseline", "baseline range", "unit"]
    title = f"Atlas training plan: {images:,} images, {sites} sites"
    print_table(rows, columns, title)
    shuffle_cols = list(meta["shuffle"][0])
    print_table(meta["shuffle"], shuffle_cols, "Epoch order: quality vs read locality")
    speed_cols = list(meta["read_speed"][0])
    print_table(meta["read_speed"], speed_cols, "Epoch order: reads at 5 ms per request")
    return write_report(
        out,
        "plan",
        rows,
        columns,
        title,
        json.loads(json.dumps(meta, default=str)),
        PlotSpec(x="measure", y=["atlas", "baseline"], ylabel="value (see unit)", log=True),
    )


if __name__ == "__main__":  # python -m atlas.bench.plan OUT IMAGES [KEEP] (benchmarks/plan.py)
    run(
        Path(sys.argv[1]),
        images=int(sys.argv[2]),
        keep=Path(sys.argv[3]) if len(sys.argv) > 3 else None,
    )
