"""``atlas bench write``: write/read throughput and compression of storage layouts.

For each backend (a local directory, and a SeaweedFS S3 server started for the run) the same
CT phantom is written with several codec/chunk/shard choices through :func:`atlas.ome.write_image`
(level 0 only, so every row moves the same bytes), and with the baseline — zarr-python's
``zarr.create_array`` with its defaults plus one plain ``arr[:] = data`` — in the same process.
Reads are a full read of level 0 through zarr-python and, for the Atlas layouts, tensorstore.
Each case repeats; the report gives the median, the spread and the ratio to the baseline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.report import PlotSpec, Timing, print_table, time_call, write_report
from atlas.errors import CorruptData
from atlas.ome import Layout, open_image, write_image
from atlas.storage import Store, open_store


@dataclass(frozen=True)
class Case:
    """One storage layout to measure (``layout=None`` is the zarr-python baseline)."""

    name: str
    layout: Layout | None


CASES = (
    Case("baseline: zarr.create_array defaults", None),
    Case("zstd-3, chunk 32x64x64, shard 64x512x512", Layout((32, 64, 64), (64, 512, 512))),
    Case("zstd-3, chunk 1x256x256, shard 64x512x512", Layout((1, 256, 256), (64, 512, 512))),
    Case("blosc-lz4, chunk 32x64x64, shard 64x512x512",
         Layout((32, 64, 64), (64, 512, 512), codec="blosc-lz4", level=5)),
    Case("zstd-1, chunk 64x64x64, shard 64x256x256",
         Layout((64, 64, 64), (64, 256, 256), level=1)),
)  # fmt: skip


def _stored_bytes(store: Store, prefix: str) -> int:
    return sum(len(store.read_bytes(k)) for k in store.list(prefix + "/"))


def _bench_case(
    store: Store, data: np.ndarray, case: Case, repeats: int, tensorstore_ok: bool
) -> dict[str, Any]:
    import zarr

    raw = data.nbytes
    paths: list[str] = []

    def write() -> None:
        name = f"bench/{uuid.uuid4().hex[:8]}.ome.zarr"
        paths.append(name)
        if case.layout is None:
            arr = zarr.create_array(
                store.zarr_store(), name=f"{name}/0", shape=data.shape, dtype=data.dtype
            )
            arr[:] = data
        else:
            write_image(store, name, data, spacing=(1.0, 1.0, 1.0), layout=case.layout,
                        max_levels=1)  # fmt: skip

    w = time_call(write, repeats=repeats, warmup=0)
    last = paths[-1]
    arr = zarr.open_array(store.zarr_store(), path=f"{last}/0", mode="r")
    r = time_call(lambda: arr[:], repeats=repeats, warmup=0)
    if not np.array_equal(arr[:], data):
        raise CorruptData(f"{case.name}: data read back differs from data written")
    ts_read: Timing | None = None
    if case.layout is not None and tensorstore_ok:
        handle = open_image(store, last).tensorstore(0)
        ts_read = time_call(lambda: handle.read().result(), repeats=repeats, warmup=0)
    stored = _stored_bytes(store, f"{last}/0")
    for p in paths:
        store.delete_prefix(p)
    row: dict[str, Any] = {
        "layout": case.name,
        "write MB/s": raw / w.median / 1e6,
        "write spread": w.spread,
        "read MB/s (zarr)": raw / r.median / 1e6,
        "read MB/s (tensorstore)": raw / ts_read.median / 1e6 if ts_read else None,
        "ratio": raw / max(stored, 1),
        "stored MB": stored / 1e6,
        "write_s": w,
        "read_s": r,
    }
    return row


@contextmanager
def _backends(include_s3: bool, workdir: Path) -> Iterator[list[tuple[str, Store, str]]]:
    """Yield (name, store, note) for each backend; SeaweedFS is started and stopped here."""
    local = open_store(workdir / "local")
    backends: list[tuple[str, Store, str]] = [("local", local, "")]
    server = None
    if include_s3:
        import os

        from atlas.testing.seaweed import SeaweedS3

        server = SeaweedS3(workdir / "seaweed", buckets=["bench"], name="bench")
        server.start()
        os.environ["ATLAS_BENCH_S3_KEY"] = server.admin.access_key
        os.environ["ATLAS_BENCH_S3_SECRET"] = server.admin.secret_key
        s3 = open_store(
            "s3://bench/atlas",
            endpoint=server.endpoint_url,
            key_env="ATLAS_BENCH_S3_KEY",
            secret_env="ATLAS_BENCH_S3_SECRET",
            site="bench",
        )
        backends.append(("seaweedfs-s3", s3, "SeaweedFS on loopback"))
    try:
        yield backends
    finally:
        if server is not None:
            server.stop()


def run(
    out: Path,
    quick: bool = False,
    s3: bool = True,
    shape: tuple[int, int, int] | None = None,
    repeats: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Measure every case on every backend; print the table and write JSON/Markdown/PNG."""
    from atlas.testing.phantom import make_phantom

    shape = shape or ((16, 128, 128) if quick else (128, 512, 512))
    repeats = repeats or (1 if quick else 3)
    data = np.asarray(make_phantom(shape, seed=0).image.compute())
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="atlas-bench-write-"))
    started = time.perf_counter()
    try:
        with _backends(s3, workdir) as backends:
            for backend, store, _note in backends:
                store.ensure_reachable(create=True)
                base: dict[str, Any] | None = None
                for case in CASES:
                    if progress:
                        progress(f"{backend}: {case.name}")
                    row = {"backend": backend, **_bench_case(store, data, case, repeats, True)}
                    if case.layout is None:
                        base = row
                    assert base is not None
                    row["write vs baseline"] = row["write MB/s"] / base["write MB/s"]
                    row["read vs baseline"] = row["read MB/s (zarr)"] / base["read MB/s (zarr)"]
                    rows.append(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        row["case"] = f"{row['backend']}: {row['layout']}"
    columns = [
        "backend", "layout", "write MB/s", "write spread", "write vs baseline",
        "read MB/s (zarr)", "read vs baseline", "read MB/s (tensorstore)", "ratio", "stored MB",
    ]  # fmt: skip
    title = "Atlas storage write/read benchmark"
    print_table(rows, columns, title)
    meta = {
        "shape": list(shape),
        "dtype": "int16",
        "raw_MB": data.nbytes / 1e6,
        "repeats": repeats,
        "statistic": "median of repeats; spread = (max - min) / median",
        "baseline": "zarr.create_array(store, shape, dtype) with zarr defaults + arr[:] = data",
        "atlas": "atlas.ome.write_image(..., max_levels=1) with the layout named in the row",
        "seconds": time.perf_counter() - started,
    }
    return write_report(
        out, "write", rows, columns, title, meta,
        PlotSpec(x="case", y=["write MB/s", "read MB/s (zarr)", "read MB/s (tensorstore)"],
                 ylabel="MB/s (higher is better)"),
    )  # fmt: skip
