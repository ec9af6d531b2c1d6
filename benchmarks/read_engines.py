"""Patches per second of atlas.read's engines on a local store (decision record 0043).

Writes a few CT-like volumes to a temporary local store (or a SeaweedFS server with ``--s3``),
draws one list of random 3-D patches, and reads the same list with:

- ``naive``: zarr-python, one patch after the other (``array[box]``), what users write first;
- ``zarr``: :class:`atlas.read.Reader` with the zarr-python engine;
- ``tensorstore``: :class:`atlas.read.Reader` with the tensorstore engine.

Each run of a reader gets a fresh 64 MiB chunk cache, so every run reads and decodes every
chunk again (a first epoch), while a shard's index, once read, is kept as in real use.
Prints a Markdown table (median and range over the repetitions) and writes JSON.

Usage::

    python benchmarks/read_engines.py [--patches 200] [--size 32] [--reps 5] [--s3] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from atlas.ome import Layout, write_image
from atlas.read import ImageRef, Reader, ReadRequest, Region
from atlas.storage import Store, open_store

SHAPE = (64, 192, 192)
LAYOUT = Layout(chunks=(32, 64, 64), shards=(64, 192, 192))


def _volumes(store: Store, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.normal(40, 300, size=SHAPE).astype("int16")  # CT-like noise: compresses ~2x
        path = f"bench/v{i}.ome.zarr"
        write_image(store, path, base, spacing=(1, 1, 1), layout=LAYOUT, max_levels=1)
        paths.append(path)
    return paths


def _requests(paths: list[str], n: int, size: int, site: str) -> list[ReadRequest]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        path = paths[int(rng.integers(len(paths)))]
        start = tuple(int(rng.integers(0, s - size + 1)) for s in SHAPE)
        region = Region(start, tuple(v + size for v in start))
        out.append(ReadRequest(ImageRef(site, path), region))
    return out


def _naive(store: Store, reqs: list[ReadRequest]) -> float:
    arrays = {}
    t0 = time.perf_counter()
    for r in reqs:
        if r.image.path not in arrays:
            arrays[r.image.path] = zarr.open_array(
                store.zarr_store(), path=f"{r.image.path}/0", mode="r"
            )
        assert r.region is not None
        np.asarray(arrays[r.image.path][r.region.slices()])
    return time.perf_counter() - t0


_RUNS = iter(range(1 << 30))


def _reader(store: Store, reqs: list[ReadRequest], engine: str, budget: int | None = None) -> float:
    # a cache of its own for each run (one engine per cache size per process): cold, as
    # for a first epoch, yet shard indexes read once are kept, as in real use
    cache = (64 << 20) + next(_RUNS)
    reader = Reader({"bench": store}, engine=engine, cache_bytes=cache, concurrency=budget)
    reader.info(reqs[0].image)
    reader.concurrency_for("bench")  # the latency probe is not part of the timing
    for ref in {r.image for r in reqs}:
        reader.info(ref)
    t0 = time.perf_counter()
    reader.read_many(reqs)
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--patches", type=int, default=200)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--s3", action="store_true", help="read from a SeaweedFS server")
    ap.add_argument(
        "--latency-ms", type=float, default=0.0,
        help="inject this latency per request (zarr stack only: tensorstore is skipped)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--budgets", default="", help="also run tensorstore with these fixed budgets, e.g. 1,4,64"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.s3:
            from atlas.testing.seaweed import SeaweedS3

            server = SeaweedS3(Path(tmp) / "weed", buckets=["atlas"], name="bench").start()
            os.environ["BENCH_KEY"] = server.admin.access_key
            os.environ["BENCH_SECRET"] = server.admin.secret_key
            store = open_store(
                "s3://atlas/bench", endpoint=server.endpoint_url, key_env="BENCH_KEY",
                secret_env="BENCH_SECRET", site="bench",
            )  # fmt: skip
        else:
            store = open_store(Path(tmp) / "store", site="bench")
        try:
            paths = _volumes(store, args.volumes)
            engines = ["zarr", "tensorstore"]
            if args.latency_ms:
                from atlas.storage import LatencyConfig

                store = open_store(
                    store.location.root, site="bench",
                    latency=LatencyConfig(base=args.latency_ms / 1000),
                )  # fmt: skip
                engines = ["zarr"]
            reqs = _requests(paths, args.patches, args.size, "bench")
            budgets = [int(b) for b in args.budgets.split(",") if b]
            last = engines[-1]
            runs: dict[str, list[float]] = {"naive": [], **{e: [] for e in engines}}
            runs.update({f"{last}, budget {b}": [] for b in budgets})
            for _ in range(args.reps):  # interleaved, so machine noise hits all alike
                runs["naive"].append(_naive(store, reqs))
                for engine in engines:
                    runs[engine].append(_reader(store, reqs, engine))
                for b in budgets:
                    runs[f"{last}, budget {b}"].append(_reader(store, reqs, last, b))
            concurrency = Reader({"bench": store}, engine=last).concurrency_for("bench")
        finally:
            if server is not None:
                server.stop()

    rows = {}
    for name, seconds in runs.items():
        rates = [args.patches / s for s in seconds]
        rows[name] = {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "runs": rates,
        }
    result = {
        "store": ("s3 (SeaweedFS, loopback)" if args.s3 else "local disk")
        + (f" + {args.latency_ms:g} ms per request" if args.latency_ms else ""),
        "patches": args.patches,
        "patch": [args.size] * 3,
        "volumes": args.volumes,
        "shape": list(SHAPE),
        "chunks": list(LAYOUT.chunks or ()),
        "shards": list(LAYOUT.shards or ()),
        "reps": args.reps,
        "auto_concurrency": concurrency,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "patches_per_s": rows,
    }
    naive = rows["naive"]["median"]
    print(f"{result['store']}: {args.patches} patches of {args.size}^3, {args.reps} runs, "
          f"auto in-flight budget {concurrency}")  # fmt: skip
    print("| reader | patches/s (median) | range | vs naive |")
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median']:.0f} | {row['min']:.0f}-{row['max']:.0f} | "
              f"{row['median'] / naive:.1f}x |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
