"""``atlas bench stream``: training streams vs the loaders users write or pick, same data, same run.

On the same volumes (:mod:`~atlas.bench.stream_data`) and, where a pipeline takes one, the same
patch list, each site runs:

1. naive: zarr-python, one patch per ``__getitem__``, a ``DataLoader`` with 2 workers;
2. MONAI (``LoadImaged`` + ``RandCropByPosNegLabeld``, plain and with ``CacheDataset`` where it
   fits in memory) and TorchIO (``Queue`` + ``LabelSampler``) on gzipped NIfTI copies;
3. Atlas: ``atlas.stream.AtlasDataset`` through a ``DataLoader`` (and with 0 and 4 workers on
   the local store, for memory as workers grow, and with 0 behind the proxy);
4. the ceiling: tensorstore with every read of the list issued at once;
5. once, the physical ceiling: numcodecs decoding the same chunks from memory.

Sites: a local directory; the same with 20 ms per request injected by
:class:`atlas.storage.LatencyStore` (only zarr-python readers see it: the rows that cannot
are not run there and the report lists them); a SeaweedFS server started for the run; and the
same server behind :class:`atlas.testing.latency_proxy.LatencyProxy` adding 20 ms per request,
which every client sees. Each row repeats; the report gives medians, the spread of the
samples/s and the ratio to the naive loader on the same site.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.report import PlotSpec, print_table, write_report
from atlas.bench.stream_atlas import WarmAtlas, atlas_available, atlas_patches, run_atlas
from atlas.bench.stream_baselines import load_chunks, run_naive, run_numcodecs, run_tensorstore
from atlas.bench.stream_data import (
    BenchData,
    NiftiFiles,
    Site,
    make_data,
    write_nifti,
    write_volumes,
)
from atlas.bench.stream_measure import Measurement, measure
from atlas.bench.stream_nifti import monai_cache_fits, run_monai, run_torchio
from atlas.errors import NotFound
from atlas.ome import Layout
from atlas.storage import LatencyConfig, Store, open_store

__all__ = ["PIPELINES", "Sizes", "run"]

#: pipeline id -> table name
PIPELINES = {
    "naive": "naive: zarr-python per patch, DataLoader x2",
    "monai": "MONAI: LoadImaged + RandCropByPosNegLabeld, x2",
    "monai-cache": "MONAI: CacheDataset + RandCropByPosNegLabeld, x2",
    "torchio": "TorchIO: Queue + LabelSampler, x2",
    "atlas": "Atlas cold: new loader x2 per run",
    "atlas-w0": "Atlas: AtlasDataset, DataLoader x0",
    "atlas-w4": "Atlas cold: new loader x4 per run",
    "atlas-warm": "Atlas warm: loader x2 kept, next epoch",
    "tensorstore": "ceiling: tensorstore, every read at once",
    "numcodecs": "physical ceiling: numcodecs from memory",
}
#: pipelines whose reads go through the zarr-python store stack (see LatencyStore)
_ZARR_STACK = frozenset({"naive", "atlas", "atlas-w0", "atlas-w4", "atlas-warm"})
LATENCY_S = 0.020


@dataclass(frozen=True)
class Sizes:
    """How big a run is."""

    volumes: int
    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    patches: int
    batch: int
    repeats: int
    chunks: tuple[int, int, int]
    shards: tuple[int, int, int]
    #: samples per epoch of the warm Atlas row (a loader kept across epochs)
    warm_epoch: int = 0

    @classmethod
    def quick(cls) -> Sizes:
        """Tiny volumes, one repeat (CI smoke run)."""
        return cls(2, (32, 64, 64), (16, 16, 16), 16, 4, 1, (16, 32, 32), (32, 64, 64), 16)

    @classmethod
    def full(cls) -> Sizes:
        """The documented run (minutes on 2 cores)."""
        return cls(4, (64, 192, 192), (32, 64, 64), 64, 8, 3, (32, 64, 64), (64, 192, 192), 512)


def _runner(
    pipeline: str, site: Site, data: BenchData, sizes: Sizes, chunks: Any
) -> Callable[[Any], None]:
    batch = sizes.batch
    if pipeline == "naive":
        return lambda sink: run_naive(site, data, sink, batch)
    if pipeline == "monai":
        return lambda sink: run_monai(site, data, sink, batch)
    if pipeline == "monai-cache":
        return lambda sink: run_monai(site, data, sink, batch, cache=True)
    if pipeline == "torchio":
        return lambda sink: run_torchio(site, data, sink, batch)
    if pipeline.startswith("atlas"):
        workers = {"atlas": 2, "atlas-w0": 0, "atlas-w4": 4}[pipeline]
        return lambda sink: run_atlas(site, data, sink, batch, workers)
    if pipeline == "tensorstore":
        return lambda sink: run_tensorstore(site, data, sink, batch)
    if pipeline == "numcodecs":
        return lambda sink: run_numcodecs(chunks, data, sink, batch)
    raise NotFound(f"no pipeline {pipeline!r}")


def _row(site: str, pipeline: str, runs: list[Measurement], data: BenchData) -> dict[str, Any]:
    rates = [m.samples / m.wall_s for m in runs]
    rate = statistics.median(rates)
    spread = (max(rates) - min(rates)) / rate if rate > 0 else 0.0
    cpu = statistics.median(m.cpu_s / m.wall_s * 100 for m in runs)
    return {
        "site": site,
        "pipeline": PIPELINES[pipeline],
        "id": pipeline,
        "samples/s": rate,
        "MB/s": rate * data.patch_bytes / 1e6,
        "steady samples/s": statistics.median(m.steady_rate for m in runs),
        "spread": spread,
        "first batch s": statistics.median(m.first_batch_s for m in runs),
        "peak MB": statistics.median(m.peak_memory_bytes for m in runs) / 1e6,
        "CPU %": cpu,
        "shuffle rho": statistics.median(m.spearman for m in runs),
        "verified": all(m.verified for m in runs),
        "samples": runs[0].samples,
        "list_checksum": runs[0].list_checksum,
        "same list": pipeline not in ("monai", "monai-cache", "torchio", "atlas-warm"),
        "runs": [m.to_dict() for m in runs],
    }


def _s3fs_kwargs(server: Any, endpoint: str) -> dict[str, Any]:
    kwargs = server.s3fs_kwargs()
    kwargs["client_kwargs"] = {**kwargs["client_kwargs"], "endpoint_url": endpoint}
    return kwargs


@contextmanager
def _sites(
    workdir: Path,
    data: BenchData,
    include_s3: bool,
    quick: bool,
    progress: Callable[[str], None],
) -> Iterator[tuple[list[Site], list[int]]]:
    """Write the data to every store and yield the sites and the server pids (not measured)."""
    local = open_store(workdir / "local", site="local")
    local.ensure_reachable(create=True)
    progress("writing volumes and NIfTI copies to the local store")
    write_volumes(local, data)
    write_nifti(local, data)
    nifti_local = NiftiFiles(local.fs_path("bench-stream-nifti"))
    blind = frozenset(PIPELINES) - _ZARR_STACK
    sites = [
        Site("local", local, nifti_local),
        Site(
            "local + 20 ms (LatencyStore)",
            open_store(workdir / "local", site="local", latency=LatencyConfig(LATENCY_S)),
            nifti_local,
            LATENCY_S,
            blind,
            "latency injected in the zarr store stack: readers outside it cannot see it",
        ),
    ]
    pids: list[int] = []
    with ExitStack() as stack:
        if include_s3:
            from atlas.testing.latency_proxy import LatencyProxy
            from atlas.testing.seaweed import SeaweedS3

            server = stack.enter_context(
                SeaweedS3(workdir / "seaweed", buckets=["bench"], name="bench")
            )
            os.environ["ATLAS_BENCH_S3_KEY"] = server.admin.access_key
            os.environ["ATLAS_BENCH_S3_SECRET"] = server.admin.secret_key
            s3 = open_store(
                "s3://bench/stream",
                endpoint=server.endpoint_url,
                key_env="ATLAS_BENCH_S3_KEY",
                secret_env="ATLAS_BENCH_S3_SECRET",
                site="bench",
            )
            s3.ensure_reachable(create=True)
            progress("writing volumes and NIfTI copies to SeaweedFS")
            write_volumes(s3, data)
            write_nifti(s3, data)
            root = s3.fs_path("bench-stream-nifti")
            proxy = stack.enter_context(LatencyProxy(server.endpoint_url, LATENCY_S))
            far = Store(dataclasses.replace(s3.location, endpoint=proxy.endpoint_url))
            if not quick:  # the quick run measures S3 behind the proxy only
                plain = NiftiFiles(root, _s3fs_kwargs(server, server.endpoint_url))
                sites.append(Site("seaweedfs", s3, plain))
            sites += [
                Site(
                    "seaweedfs + 20 ms (proxy)",
                    far,
                    NiftiFiles(root, _s3fs_kwargs(server, proxy.endpoint_url)),
                    LATENCY_S,
                    frozenset(),
                    "a loopback TCP proxy holds every request 20 ms: every client sees it",
                ),
            ]
            pids = [*server.pids, *([proxy.pid] if proxy.pid else [])]
        yield sites, pids


def _pipelines_for(site: Site, index: int, data: BenchData) -> list[str]:
    wanted = ["naive", "monai", "monai-cache", "torchio", "atlas", "atlas-warm", "tensorstore"]
    if index == 0:
        wanted[6:6] = ["atlas-w0", "atlas-w4"]
    elif site.latency and not site.blind:  # in-process Atlas beside the in-process ceiling
        wanted.insert(6, "atlas-w0")
    if not monai_cache_fits(data):
        wanted.remove("monai-cache")
    if not atlas_available():
        wanted = [p for p in wanted if not p.startswith("atlas")]
    return [p for p in wanted if p not in site.blind]


def _warm_runs(site: Site, data: BenchData, sizes: Sizes, pids: list[int]) -> list[Measurement]:
    """The warm row: one loader, an unmeasured first epoch, then one epoch per repeat."""
    warm = WarmAtlas(site, data, sizes.batch, 2, sizes.warm_epoch or len(data.patches))
    try:
        warm.warm_up()
        return [
            measure(data, warm, limit=warm.samples, exclude_pids=pids) for _ in range(sizes.repeats)
        ]
    finally:
        warm.close()


def _ambitions(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, computed from the rows (None where a row is missing)."""

    def rate(site: str, pipeline: str) -> float | None:
        for row in rows:
            if row["site"] == site and row["id"] == pipeline:
                return float(row["samples/s"])
        return None

    def ratio(site: str, a: str, b: str) -> float | None:
        x, y = rate(site, a), rate(site, b)
        return x / y if x is not None and y else None

    out: dict[str, Any] = {}
    for site in dict.fromkeys(r["site"] for r in rows):
        out[site] = {
            "atlas_vs_naive": ratio(site, "atlas", "naive"),
            "atlas_vs_monai": ratio(site, "atlas", "monai"),
            "atlas_vs_monai_cache": ratio(site, "atlas", "monai-cache"),
            "atlas_vs_torchio": ratio(site, "atlas", "torchio"),
            "atlas_vs_tensorstore": ratio(site, "atlas", "tensorstore"),
            "atlas_first_batch_s": next(
                (r["first batch s"] for r in rows if r["site"] == site and r["id"] == "atlas"), None
            ),
            "atlas_w0_vs_naive": ratio(site, "atlas-w0", "naive"),
            "atlas_warm_vs_naive": ratio(site, "atlas-warm", "naive"),
            "atlas_warm_vs_monai": ratio(site, "atlas-warm", "monai"),
            "atlas_warm_vs_torchio": ratio(site, "atlas-warm", "torchio"),
            "atlas_warm_vs_tensorstore": ratio(site, "atlas-warm", "tensorstore"),
            "atlas_w0_vs_tensorstore": ratio(site, "atlas-w0", "tensorstore"),
        }
    out["atlas_peak_MB_by_workers"] = {
        str(w): next((r["peak MB"] for r in rows if r["site"] == "local" and r["id"] == pid), None)
        for w, pid in ((0, "atlas-w0"), (2, "atlas"), (4, "atlas-w4"))
    }
    return out


def _import_libraries() -> None:
    """Import every pipeline's libraries before anything is timed (imports are not reads)."""
    import warnings

    with warnings.catch_warnings():  # MONAI warns that an optional GPU decoder is missing
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        import monai.data
        import monai.transforms
    import tensorstore
    import torch.utils.data
    import torchio
    import zarr

    del monai, tensorstore, torch, torchio, zarr


def run(
    out: Path,
    quick: bool = False,
    s3: bool = True,
    sizes: Sizes | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Run every pipeline on every site; print the table and write JSON/Markdown/PNG."""
    say = progress or (lambda _msg: None)
    sizes = sizes or (Sizes.quick() if quick else Sizes.full())
    started = time.perf_counter()
    say("importing torch, MONAI, TorchIO, tensorstore")
    _import_libraries()
    layout = Layout(sizes.chunks, sizes.shards)
    data = make_data(sizes.volumes, sizes.shape, sizes.patch, sizes.patches, layout)
    if atlas_available():  # the list is the Atlas sampler's epoch, read by the others shuffled
        listed = atlas_patches(data)
        data.patches = [listed[i] for i in np.random.default_rng(0).permutation(len(listed))]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, list[str]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="atlas-bench-stream-"))
    try:
        with _sites(workdir, data, s3, quick, say) as (sites, pids):
            chunks = (load_chunks(sites[0].store, data), load_chunks(sites[0].store, data, True))
            say("numcodecs from memory")
            runs = [measure(data, _runner("numcodecs", sites[0], data, sizes, chunks),
                            exclude_pids=pids) for _ in range(sizes.repeats)]  # fmt: skip
            rows.append(_row("memory", "numcodecs", runs, data))
            for index, site in enumerate(sites):
                if site.blind:
                    skipped[site.name] = sorted(PIPELINES[p] for p in site.blind)
                for pipeline in _pipelines_for(site, index, data):
                    say(f"{site.name}: {PIPELINES[pipeline]}")
                    if pipeline == "atlas-warm":
                        runs = _warm_runs(site, data, sizes, pids)
                    else:
                        fn = _runner(pipeline, site, data, sizes, chunks)
                        limit = len(data.patches)
                        runs = [
                            measure(data, fn, limit=limit, exclude_pids=pids)
                            for _ in range(sizes.repeats)
                        ]
                    rows.append(_row(site.name, pipeline, runs, data))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    naive = {r["site"]: r["samples/s"] for r in rows if r["id"] == "naive"}
    for row in rows:
        base = naive.get(row["site"])
        row["x naive"] = row["samples/s"] / base if base else None
        row["case"] = f"{row['site']}: {row['pipeline']}"
    columns = [
        "site", "pipeline", "samples/s", "x naive", "MB/s", "spread", "steady samples/s",
        "first batch s",
        "peak MB", "CPU %", "shuffle rho", "verified",
    ]  # fmt: skip
    title = "Atlas training-stream benchmark"
    print_table(rows, columns, title)
    meta = {
        "quick": quick,
        **{f"sizes.{k}": v for k, v in dataclasses.asdict(sizes).items()},
        "patch_MB": data.patch_bytes / 1e6,
        "latency_ms": LATENCY_S * 1e3,
        "not run with injected latency (cannot see it)": skipped,
        "atlas_available": atlas_available(),
        "patch list": (
            "epoch 0 of atlas.stream.BalancedSampler (half centred in the tumour box), "
            "read by naive/tensorstore/numcodecs in a seeded random order"
            if atlas_available()
            else "built-in: half centred on tumour voxels, half uniform, seeded random order"
        ),
        "samples": "image (int16) and label (uint8) patch; MB/s counts both",
        "statistic": "median of repeats; spread = (max - min) / median of samples/s",
        "samples/s": "all samples / wall time from the pipeline's start (startup included)",
        "warm": (
            "Atlas warm: one loader kept across repeats (workers already up, as in a long "
            "training run); an unmeasured first epoch, then each repeat reads the next epoch "
            f"of {sizes.warm_epoch or len(data.patches)} samples (other samples than the list)"
        ),
        "steady samples/s": "samples after the first batch / time after the first batch",
        "memory": "peak PSS of this process and its children (servers excluded) above its start",
        "cpu": "user+system seconds of this process and its reaped children / wall (100 = a core)",
        "shuffle rho": "Spearman correlation of output order vs storage order (0 = no order)",
        "ambitions": _ambitions(rows),
        "seconds": time.perf_counter() - started,
    }
    return write_report(
        out, "stream", rows, columns, title, meta,
        PlotSpec(x="case", y=["samples/s", "steady samples/s"], log=True,
                 ylabel="samples/s (higher is better)",
                 labels={"samples/s": "all-in (startup included)",
                         "steady samples/s": "after the first batch"}),
        extra_plots={
            "first-batch": PlotSpec(x="case", y=["first batch s"], log=True,
                                    ylabel="time to first batch, s (lower is better)"),
            "memory": PlotSpec(x="case", y=["peak MB"],
                               ylabel="peak PSS of the process tree above its start, MB"),
        },
    )  # fmt: skip
