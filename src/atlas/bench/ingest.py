"""``atlas bench ingest``: DICOM → OME-Zarr throughput against a naive baseline, same run.

The synthetic study (a seeded CT series with SEG, RTSTRUCT and NIfTI labels) is written to a
temporary folder once. Then, on the same files:

- **atlas**: the full ingest (discovery, de-identification, decode, labels, sharded pyramid,
  staging records, journal) on a local store, with the local dask cluster;
- **baseline**: what a script would do — ``pydicom.dcmread`` each file one by one, sort by
  position, stack with numpy, apply the rescale, and write one level with
  ``zarr.create_array`` + ``arr[:] = volume`` (no de-identification, labels or pyramid).

Reported: seconds, slices/s, MB/s of DICOM read, the ratio, and the peak resident memory of the
whole process tree during the atlas run (sampled).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.report import PlotSpec, print_table, write_report
from atlas.errors import AtlasError


class _PeakRSS:
    """Samples the resident memory of this process and its children in a background thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            with contextlib.suppress(psutil.Error):
                for p in [me, *me.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _baseline(files: list[Path], out: Path) -> None:
    import pydicom
    import zarr

    datasets = [pydicom.dcmread(f) for f in files]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    volume = np.stack([d.pixel_array for d in datasets]).astype(np.float32)
    slope = float(getattr(datasets[0], "RescaleSlope", 1.0))
    intercept = float(getattr(datasets[0], "RescaleIntercept", 0.0))
    volume = (volume * slope + intercept).astype(np.int16)
    arr = zarr.create_array(str(out), shape=volume.shape, dtype=volume.dtype)
    arr[:] = volume


def run(
    out: Path,
    quick: bool = False,
    shape: tuple[int, int, int] | None = None,
    repeats: int | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """Measure atlas ingest vs the naive baseline on a synthetic study; write the report."""
    from atlas.ingest.driver import ingest
    from atlas.ingest.series import IngestOptions
    from atlas.storage import open_store
    from atlas.testing.synthetic import make_study

    shape = shape or ((16, 128, 128) if quick else (300, 512, 512))
    repeats = repeats or 1
    work = Path(tempfile.mkdtemp(prefix="atlas-bench-ingest-"))
    secret_var = "ATLAS_BENCH_SITE_SECRET"
    os.environ.setdefault(secret_var, "bench-" + "k" * 32)
    try:
        t0 = time.perf_counter()
        study = make_study(work / "dicom", shape=shape, seed=0)
        gen_seconds = time.perf_counter() - t0
        files = list(study.ct_files)
        assert study.seg_file and study.rtstruct_file and study.nifti_file
        sources = [study.ct_files[0].parent, study.seg_file, study.rtstruct_file]
        masks = [study.nifti_file]
        dicom_bytes = sum(f.stat().st_size for f in files)
        n_slices = len(files)
        rows: list[dict[str, Any]] = []
        atlas_times, inproc_times, base_times, peaks = [], [], [], []
        for rep in range(repeats):
            target = open_store(work / f"store-{rep}")
            with _PeakRSS() as mem:
                t = time.perf_counter()
                summary = ingest(
                    sources,
                    store=target,
                    labels=masks,
                    site="bench",
                    collection="bench",
                    workers=workers or os.cpu_count() or 1,
                    options=IngestOptions(secret_env=secret_var),
                )
                atlas_times.append(time.perf_counter() - t)
            peaks.append(mem.peak)
            if len(summary.written) != 1 or summary.quarantined:
                raise AtlasError(
                    f"ingest wrote {len(summary.written)} series and quarantined "
                    f"{len(summary.quarantined)} files; expected 1 series and none"
                )
            t = time.perf_counter()
            ingest(
                sources,
                store=open_store(work / f"store-inproc-{rep}"),
                labels=masks,
                site="bench",
                collection="bench",
                scheduler="synchronous",
                options=IngestOptions(secret_env=secret_var),
            )
            inproc_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            _baseline(files, work / f"baseline-{rep}.zarr")
            base_times.append(time.perf_counter() - t)
        atlas_s, base_s = float(np.median(atlas_times)), float(np.median(base_times))
        inproc_s = float(np.median(inproc_times))
        peak = {"peak RSS MB": max(peaks) / 1e6}
        for name, seconds, extra in (
            ("atlas ingest (de-id, labels, pyramid, records)", atlas_s, peak),
            ("atlas ingest in-process (no cluster start-up)", inproc_s, {}),
            ("baseline: pydicom one by one + numpy + zarr", base_s, {}),
        ):
            rows.append(
                {
                    "pipeline": name,
                    "seconds": seconds,
                    "slices/s": n_slices / seconds,
                    "MB/s": dicom_bytes / seconds / 1e6,
                    "vs baseline": base_s / seconds,
                    **extra,
                }
            )
        columns = ["pipeline", "seconds", "slices/s", "MB/s", "vs baseline", "peak RSS MB"]
        title = "Atlas ingest benchmark"
        print_table(rows, columns, title)
        meta = {
            "study": f"{shape[0]} slices of {shape[1]}x{shape[2]} CT + SEG + RTSTRUCT + NIfTI",
            "dicom_MB": dicom_bytes / 1e6,
            "volume_MB": int(np.prod(shape)) * 2 / 1e6,
            "repeats": repeats,
            "workers": workers or os.cpu_count(),
            "generation_seconds": gen_seconds,
            "atlas_seconds_all": atlas_times,
            "atlas_inprocess_seconds_all": inproc_times,
            "baseline_seconds_all": base_times,
            "peak_rss_note": "sampled every 50 ms over this process and all its children",
        }
        return write_report(
            out, "ingest", rows, columns, title, meta,
            PlotSpec(x="pipeline", y=["slices/s"], ylabel="slices per second (higher is better)"),
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
