"""Dask chunking of an Atlas image: one task per shard vs one per inner chunk (decision 0045).

Writes one volume to a local store (or an S3 store given by URL) and compares, for
``volume.mean()``:

- ``to_dask`` (one chunk per shard, Atlas's choice), reading with tensorstore (chunk cache off,
  so repeated runs read again) and with zarr-python;
- ``dask.array.from_zarr`` on the same level, which takes the zarr array's *inner* chunks;
- ``dask.array.from_zarr`` with the shard shape as chunks (the same partition as ``to_dask``).

For each: graph tasks, pickled graph bytes, time to build the array and time to compute the
mean with the threaded scheduler and on a 2-process ``LocalCluster`` (median and range of
``--repeat`` runs). Prints a Markdown table and writes JSON with ``--json``.

    python scripts/dask_chunks.py --shape 128 256 256 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def _interleaved(cases: dict[str, Callable[[], Any]], repeat: int) -> dict[str, dict[str, float]]:
    """Time every case ``repeat`` times, round-robin, so load changes hit all cases alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: _stats(t) for name, t in times.items()}


def main() -> None:
    import cloudpickle
    import dask.array as da
    from distributed import Client, LocalCluster

    from atlas.ome import Layout, open_image, write_image
    from atlas.read import ImageRef, Reader, to_dask
    from atlas.storage import open_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256])
    parser.add_argument("--chunks", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--shards", type=int, nargs=3, default=[64, 256, 256])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", default=None, help="store URL (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    store = open_store(args.store or tmp.name, site="bench")
    rng = np.random.default_rng(0)
    data = rng.normal(0, 300, size=tuple(args.shape)).astype(np.int16)
    layout = Layout(chunks=tuple(args.chunks), shards=tuple(args.shards))
    write_image(store, "bench/v.ome.zarr", data, spacing=(1, 1, 1), layout=layout, overwrite=True)
    level = open_image(store, "bench/v.ome.zarr").array(0)
    ref = ImageRef("bench", "bench/v.ome.zarr")
    builders: dict[str, Callable[[], Any]] = {
        # no chunk cache: every run reads the shards again, as the other methods do
        "to_dask, tensorstore (shards)": lambda: to_dask(
            Reader({"bench": store}, cache_bytes=0), [ref]
        )[0],
        "to_dask, zarr (shards)": lambda: to_dask(Reader({"bench": store}, engine="zarr"), [ref])[
            0
        ],
        "from_zarr (inner chunks)": lambda: da.from_zarr(level),
        "from_zarr (shard chunks)": lambda: da.from_zarr(level, chunks=tuple(args.shards)),
    }
    expected = float(data.mean(dtype="float64"))
    rows = []
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")  # fmt: skip
    with cluster, Client(cluster) as client:
        arrays = {name: build() for name, build in builders.items()}
        for arr in arrays.values():
            for scheduler in ("threads", client):  # warm: imports, clients, page cache
                assert abs(float(arr.mean().compute(scheduler=scheduler)) - expected) < 1e-6
        timings = {
            part: _interleaved(cases, args.repeat)
            for part, cases in {
                "build": builders,
                "threads": {n: (lambda a=a: a.mean().compute(scheduler="threads"))
                            for n, a in arrays.items()},
                "cluster": {n: (lambda a=a: a.mean().compute(scheduler=client))
                            for n, a in arrays.items()},
            }.items()
        }  # fmt: skip
        for name, arr in arrays.items():
            graph = dict(arr.mean().__dask_graph__())
            rows.append(
                {
                    "method": name,
                    "chunks": [c[0] for c in arr.chunks],
                    "tasks": len(graph),
                    "pickled_graph_bytes": len(cloudpickle.dumps(graph)),
                    **{part: timings[part][name] for part in timings},
                }
            )
    result = {"shape": args.shape, "inner_chunks": args.chunks, "shards": args.shards,
              "store": store.url if args.store else "local folder", "rows": rows}  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)

    def fmt(t: dict[str, float]) -> str:
        return f"{t['median_s'] * 1e3:.0f} ({t['min_s'] * 1e3:.0f}-{t['max_s'] * 1e3:.0f})"

    print(f"volume {args.shape} int16, inner chunks {args.chunks}, shards {args.shards}, "
          f"{args.repeat} runs: median (min-max) ms")  # fmt: skip
    print("| method | dask chunk | tasks (mean) | pickled graph | build | threads | 2 procs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {'x'.join(map(str, r['chunks']))} | {r['tasks']} | "
              f"{r['pickled_graph_bytes'] / 1024:.1f} KiB | {fmt(r['build'])} | "
              f"{fmt(r['threads'])} | {fmt(r['cluster'])} |")  # fmt: skip


if __name__ == "__main__":
    main()
