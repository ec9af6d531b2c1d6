"""Resident memory of a training stream's process tree with 0, 2 and 4 DataLoader workers.

Decision 0048 rests on these figures. Two steps, each in its own process (tensorstore aborts a
process forked from one that has read with it, and the ``fork`` variant needs a clean parent)::

    python benchmarks/stream_memory.py prepare DIR            # writes 12 CT-like volumes
    python benchmarks/stream_memory.py measure DIR --out FILE # every configuration, 3 repeats

For each number of workers, each cache policy (``split``: the dataset's cache budget divided
between the workers, what AtlasDataset does; ``each``: every worker with the whole budget) and
each way of starting workers (``forkserver``, the default; ``fork``), it streams one epoch of
random 64^3 patches and samples the RSS and PSS of the process and all its children every
20 ms. PSS counts a page shared by n processes as 1/n in each, so its sum over the tree is the
memory the tree really holds; the RSS sum counts shared pages once per process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (64, 256, 256)
N_VOLUMES = 12
CACHE = 64 << 20


def prepare(root: Path) -> None:
    from atlas.ome import Layout, write_image
    from atlas.storage import open_store

    store = open_store(root / "site", site="local")
    rng = np.random.default_rng(0)
    for i in range(N_VOLUMES):
        data = (rng.normal(40, 300, size=SHAPE)).astype("int16")
        write_image(
            store, f"bench/s{i:02d}/v.ome.zarr", data, spacing=(1.0, 0.8, 0.8),
            layout=Layout(chunks=(32, 64, 64), shards=(64, 256, 256)), max_levels=1,
        )  # fmt: skip


def _table(root: Path):
    import pyarrow as pa

    from atlas.stream import VolumeTable

    n = N_VOLUMES
    cols = {
        "site": ["local"] * n, "collection": ["bench"] * n,
        "subject_id": [f"s{i:02d}" for i in range(n)], "series_id": [f"v{i:02d}" for i in range(n)],
        "volume": [0] * n, "image_path": [f"bench/s{i:02d}/v.ome.zarr" for i in range(n)],
        "size_z": [SHAPE[0]] * n, "size_y": [SHAPE[1]] * n, "size_x": [SHAPE[2]] * n,
        "spacing_z": [1.0] * n, "spacing_y": [0.8] * n, "spacing_x": [0.8] * n,
        "levels": [1] * n, "channels": [1] * n, "labels": [[] for _ in range(n)],
    }  # fmt: skip
    return VolumeTable.from_arrow(pa.table(cols))


class TreeMemory:
    """Peak RSS and PSS summed over this process and its children, sampled on a thread."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self.me = psutil.Process()
        self.every = every
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        rss = pss = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            rss += info.rss
            pss += info.pss
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_once(root: Path, workers: int, policy: str, context: str) -> dict:
    from atlas.read import Reader
    from atlas.storage import open_store
    from atlas.stream import AtlasDataset, PatchSampler

    store = open_store(root / "site", site="local")
    cache = CACHE if policy == "split" else CACHE * max(1, workers)
    ds = AtlasDataset(
        _table(root), PatchSampler(64, per_volume=8), reader=Reader({"local": store}),
        subset=None, seed=1, cache_bytes=cache, prefetch_bytes=64 << 20,
    )  # fmt: skip
    from atlas.stream import worker_context

    kwargs = {}
    if workers:
        kwargs["multiprocessing_context"] = "fork" if context == "fork" else worker_context()
    loader = ds.loader(batch_size=8, num_workers=workers, **kwargs)
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        first = None
        n = 0
        for batch in loader:
            first = first if first is not None else time.perf_counter() - t0
            n += len(batch["meta"]["index"])
        seconds = time.perf_counter() - t0
    return {
        "workers": workers, "policy": policy, "context": context, "samples": n,
        "seconds": seconds, "first_batch_s": first,
        "peak_rss_mb": mem.peak_rss / 1e6, "peak_pss_mb": mem.peak_pss / 1e6,
    }  # fmt: skip


def measure(root: Path, out: Path, repeats: int) -> None:
    runs = []
    configs = [(0, "split", "forkserver")]
    for workers in (2, 4):
        configs += [(workers, "split", "forkserver"), (workers, "each", "forkserver")]
        configs += [(workers, "split", "fork")]
    for _ in range(repeats):
        for workers, policy, context in configs:
            # a fresh interpreter each time: no cache or server left over from the last run
            cmd = [sys.executable, __file__, "once", str(root), str(workers), policy, context]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(line.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    summary = []
    for workers, policy, context in configs:
        mine = [
            r
            for r in runs
            if (r["workers"], r["policy"], r["context"]) == (workers, policy, context)
        ]
        row = {"workers": workers, "policy": policy, "context": context}
        for key in ("peak_pss_mb", "peak_rss_mb", "seconds", "first_batch_s"):
            values = [r[key] for r in mine]
            row[key] = statistics.median(values)
            row[key + "_spread"] = max(values) - min(values)
        summary.append(row)
    out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    print("| workers | cache | start | peak PSS MB | peak RSS MB | epoch s | first batch s |")
    print("|---|---|---|---|---|---|---|")
    for r in summary:
        print(
            f"| {r['workers']} | {r['policy']} | {r['context']} | {r['peak_pss_mb']:.0f} "
            f"± {r['peak_pss_mb_spread'] / 2:.0f} | {r['peak_rss_mb']:.0f} | {r['seconds']:.2f} "
            f"| {r['first_batch_s']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("root", type=Path)
    m = sub.add_parser("measure")
    m.add_argument("root", type=Path)
    m.add_argument("--out", type=Path, default=Path("stream-memory.json"))
    m.add_argument("--repeats", type=int, default=3)
    o = sub.add_parser("once")
    o.add_argument("root", type=Path)
    o.add_argument("workers", type=int)
    o.add_argument("policy", choices=("split", "each"))
    o.add_argument("context", choices=("forkserver", "fork"))
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.root)
    elif args.step == "measure":
        measure(args.root, args.out, args.repeats)
    else:
        print(json.dumps(run_once(args.root, args.workers, args.policy, args.context)))


if __name__ == "__main__":
    main()
