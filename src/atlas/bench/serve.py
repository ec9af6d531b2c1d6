"""``atlas bench serve``: tiles/s and latency of the real server under concurrent clients.

One synthetic CT series (512 x 512 x 1,000 voxels; tiny with ``--quick``) is written and
indexed (:mod:`atlas.bench.serve_data`); the real app runs on uvicorn on loopback in a child
process, and this process drives it with N concurrent httpx clients (bounded by a request count
and a time limit per case) asking for random tiles across levels and planes:

- **cold**: tiles never asked before (the tile cache misses; the reader's chunk cache warms
  up as the case runs), per plane at level 0 with one client, then mixed with N clients;
- **warm**: the same mixed tiles again, served from the tile cache;
- **naive**: the same mixed tiles from the baseline route of the same server process
  (zarr-python open + whole slice + Pillow per request, no cache, :mod:`atlas.bench.serve_naive`);
- **raw range**: ``Range`` requests for the first 64 KiB of level-0 shard objects over the raw
  Zarr route (when this build has it).

Every case reports tiles/s, p50/p95/p99 latency and the server's resident memory after it.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlas.bench.report import PlotSpec, print_table, write_report
from atlas.bench.serve_data import SITE, BenchSeries, free_port, make_series, serve_process
from atlas.errors import InvalidInput

__all__ = ["Sizes", "run"]

COLUMNS = [
    "case", "clients", "requests", "errors", "tiles_per_s", "p50_ms", "p95_ms", "p99_ms",
    "server_rss_mb",
]  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How big a run is."""

    shape: tuple[int, int, int]
    pyramid_target: int
    clients: int
    per_plane: int
    mixed: int
    max_seconds: float

    @classmethod
    def pick(cls, quick: bool, clients: int | None, shape: tuple[int, int, int] | None) -> Sizes:
        """The sizes of a full or ``--quick`` run, with overrides."""
        if quick:
            base = cls((48, 96, 96), 32, 4, 8, 40, 20.0)
        else:
            base = cls((1000, 512, 512), 256, 16, 60, 400, 60.0)
        return cls(
            shape or base.shape, base.pyramid_target, clients or base.clients,
            base.per_plane, base.mixed, base.max_seconds,
        )  # fmt: skip


@dataclass
class Outcome:
    """What one case measured."""

    latencies: list[float]
    errors: int
    wall_s: float


async def _drive(
    base: str, urls: list[str], headers: dict[str, str], clients: int, max_s: float
) -> Outcome:
    import httpx

    queue = list(reversed(urls))
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=120) as c:

        async def client() -> None:
            nonlocal errors
            while queue and time.perf_counter() < deadline:
                url = queue.pop()
                t0 = time.perf_counter()
                hdrs = {"Range": "bytes=0-65535"} if url.startswith("/zarr/") else None
                r = await c.get(url, headers=hdrs)
                await r.aread()
                latencies.append(time.perf_counter() - t0)
                if r.status_code not in (200, 206):
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return Outcome(latencies, errors, wall)


def _row(case: str, clients: int, out: Outcome, rss_mb: float) -> dict[str, Any]:
    lat = np.asarray(out.latencies) * 1e3 if out.latencies else np.asarray([np.nan])
    return {
        "case": case,
        "clients": clients,
        "requests": len(out.latencies),
        "errors": out.errors,
        "tiles_per_s": round(len(out.latencies) / out.wall_s, 1) if out.wall_s else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "server_rss_mb": round(rss_mb, 1),
    }


@dataclass(frozen=True)
class _Tile:
    plane: str
    level: int
    index: int
    ty: int
    tx: int

    def path(self, series_id: str) -> str:
        return (
            f"/api/series/{series_id}/tiles/{self.plane}/{self.level}/{self.index}/"
            f"{self.ty}/{self.tx}.png?window=ct-soft-tissue&labels=none"
        )

    def naive(self) -> str:
        return f"/bench/naive/{self.plane}/{self.level}/{self.index}/{self.ty}/{self.tx}.png"


class _Tiles:
    """Random tiles, each drawn once (by the pixels it shows: the level's own slice)."""

    def __init__(self, series: BenchSeries, seed: int) -> None:
        from atlas.read import ImageRef, Reader
        from atlas.serve.planes import Plane, plane_levels
        from atlas.storage import open_store

        reader = Reader({SITE: open_store(series.root, site=SITE)})
        info = reader.info(ImageRef(SITE, series.image_path))
        self.geometry = {p: plane_levels(info, p) for p in Plane}
        self.levels = len(info.levels)
        self.rng = random.Random(seed)
        self.seen: set[tuple[str, int, int, int, int]] = set()
        reader.close()

    def draw(self, n: int, plane: str | None = None, level: int | None = None) -> list[_Tile]:
        from atlas.serve.planes import Plane

        out: list[_Tile] = []
        for _ in range(n * 50):
            if len(out) == n:
                break
            p = Plane(plane) if plane else self.rng.choice(list(Plane))
            lv = level if level is not None else self.rng.randrange(self.levels)
            g = self.geometry[p][lv]
            index = self.rng.randrange(g.slices)
            tile = _Tile(
                p.value, lv, index, self.rng.randrange(g.tiles_y), self.rng.randrange(g.tiles_x)
            )
            key = (p.value, lv, index // g.normal_factor, tile.ty, tile.tx)
            if key not in self.seen:
                self.seen.add(key)
                out.append(tile)
        return out


def _rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory (MB) of process ``pid``."""
    import psutil

    rss = psutil.Process(pid).memory_info().rss / 1e6
    peak = rss
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return rss, peak


def _shard_keys(series: BenchSeries, n: int) -> list[str]:
    from atlas.storage import open_store

    store = open_store(series.root, site=SITE)
    keys = sorted(k for k in store.list(f"{series.image_path}/0/c/") if not k.endswith("/"))
    return [f"/zarr/{SITE}/{k}" for k in keys[:n]]


def run(
    out: Path,
    *,
    quick: bool = False,
    clients: int | None = None,
    shape: tuple[int, int, int] | None = None,
    data: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Run the benchmark; write ``serve.json``, ``serve.md`` and ``serve.png`` into ``out``.

    Parameters
    ----------
    out
        Folder of the report.
    quick
        A tiny volume and few requests (a smoke run).
    clients
        Concurrent clients of the mixed cases (default 16; quick 4).
    shape
        Volume ``z, y, x`` (default 1000, 512, 512; quick 48, 96, 96).
    data
        Folder for the series (kept, and reused by a later run); default a temporary one.
    progress
        Called with a short text before each case.
    """
    if clients is not None and (isinstance(clients, bool) or clients < 1 or clients > 256):
        raise InvalidInput(f"clients must be 1..256, got {clients!r}")
    sizes = Sizes.pick(quick, clients, shape)
    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="atlas-bench-serve-") as tmp:
        folder = Path(data) if data is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        say(f"writing a {sizes.shape} series")
        t0 = time.perf_counter()
        series = make_series(folder / "store", sizes.shape, pyramid_target=sizes.pyramid_target)
        write_s = time.perf_counter() - t0
        rows, meta = _measure(series, sizes, folder, say)
        meta["write_s"] = round(write_s, 1)
    title = f"Tile serving, {sizes.shape[0]} x {sizes.shape[1]} x {sizes.shape[2]} CT series"
    print_table(rows, COLUMNS, title)
    plot = PlotSpec(x="case", y=["tiles_per_s"], ylabel="tiles/s", log=True)
    lat = PlotSpec(
        x="case", y=["p50_ms", "p95_ms", "p99_ms"], ylabel="latency (ms)", log=True,
        title="Latency per case",
    )  # fmt: skip
    return write_report(out, "serve", rows, COLUMNS, title, meta, plot, {"latency": lat})


def _measure(
    series: BenchSeries, sizes: Sizes, folder: Path, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from atlas.serve.tokens import TokenIssuer

    token = TokenIssuer.from_key_file(folder / "serve.key").create(
        "bench", purpose="research", ttl_s=3600
    )
    headers = {"Authorization": f"Bearer {token}"}
    tiles = _Tiles(series, seed=0)
    port = free_port()
    options = {"render_concurrency": 4, "queue_depth": 256, "queue_wait_s": 60.0}
    proc = serve_process(series, port, options)
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    n = sizes.clients

    def case(name: str, urls: list[str], clients: int) -> dict[str, Any]:
        say(f"{name}, {clients} client(s), {len(urls)} requests")
        outcome = asyncio.run(_drive(base, urls, headers, clients, sizes.max_seconds))
        row = _row(name, clients, outcome, _rss_mb(proc.pid)[0])
        rows.append(row)
        return row

    try:
        sid = series.series_id
        case("warm-up", [t.path(sid) for t in tiles.draw(4)], 1)
        rows.clear()
        for plane in ("axial", "coronal", "sagittal"):
            case(
                f"cold {plane} L0", [t.path(sid) for t in tiles.draw(sizes.per_plane, plane, 0)], 1
            )
        mixed = tiles.draw(sizes.mixed)
        case("cold mixed", [t.path(sid) for t in mixed], n)
        again = [t.path(sid) for t in mixed]
        random.Random(1).shuffle(again)
        case("warm mixed", again, n)
        case("warm mixed", again[: max(1, len(again) // 2)], 1)
        case("naive mixed", [t.naive() for t in mixed], n)
        for plane in ("axial", "coronal"):
            drawn = tiles.draw(max(4, sizes.per_plane // 4), plane, 0)
            case(f"naive {plane} L0", [t.naive() for t in drawn], 1)
        raw = _shard_keys(series, sizes.mixed)
        row = case("raw range 64 KiB", raw * max(1, sizes.mixed // max(1, len(raw))), n)
        if row["errors"] == row["requests"]:
            row["case"] = "raw range (route absent)"
        peak = _rss_mb(proc.pid)[1]
    finally:
        proc.terminate()
        proc.join(timeout=15)
    by = {(r["case"], r["clients"]): r for r in rows}
    cold, warm = by[("cold mixed", n)], by[("warm mixed", n)]
    naive = by[("naive mixed", n)]
    meta: dict[str, Any] = {
        "shape_zyx": list(series.shape),
        "spacing_mm": [1.0, 0.7, 0.7],
        "clients": n,
        "max_seconds_per_case": sizes.max_seconds,
        "server": "uvicorn, 1 process, render_concurrency 4, tile cache 256 MB",
        "server_peak_rss_mb": round(peak, 1),
        "cold_vs_naive_throughput": _ratio(cold["tiles_per_s"], naive["tiles_per_s"]),
        "warm_vs_naive_throughput": _ratio(warm["tiles_per_s"], naive["tiles_per_s"]),
        "ambition_warm_p99_under_20ms": warm["p99_ms"] < 20,
        "ambition_cold_axial_p50_under_50ms": by[("cold axial L0", 1)]["p50_ms"] < 50,
        "ambition_cold_coronal_p50_under_150ms": by[("cold coronal L0", 1)]["p50_ms"] < 150,
        "ambition_5x_naive_at_clients": cold["tiles_per_s"] >= 5 * naive["tiles_per_s"],
    }
    return rows, meta


def _ratio(a: float, b: float) -> float:
    return round(a / b, 1) if b else float("nan")
