"""The serving benchmark's data and server: one synthetic CT series in a real catalog, a server.

:func:`make_series` writes a synthetic CT volume (generated lazily, slab by slab, so a
1,000-slice volume never sits in memory) as an OME-Zarr image with its pyramid and a label
image, records it in the site's series table and builds the index, so the server finds it
through its catalog like any ingested series. :func:`serve_process` runs the real app
(:func:`atlas.serve.app.create_app`) on uvicorn on loopback in a child process, with one more
route: the naive baseline, which opens the level with zarr-python, reads the whole slice,
windows, resamples and encodes it with Pillow for every request, with no cache.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import AtlasError

__all__ = ["BenchSeries", "free_port", "make_series", "serve_process"]

COLLECTION = "bench-ct"
SITE = "bench"
SPACING = (1.0, 0.7, 0.7)


@dataclass(frozen=True)
class BenchSeries:
    """The benchmark's series: where it is and its ids."""

    root: Path
    series_id: str
    image_path: str
    shape: tuple[int, int, int]


def _volume(shape: tuple[int, int, int]) -> Any:
    """A CT-like volume (body ellipse of soft tissue, bone ring, lungs, noise), lazily."""
    import dask.array as da

    _, ny, nx = shape

    def block(block_info: Any = None) -> np.ndarray:
        (z0, z1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
        r = ((y - ny / 2) / (0.42 * ny)) ** 2 + ((x - nx / 2) / (0.48 * nx)) ** 2
        out = np.where(r < 1, 40, -1000).astype(np.float32) + 0 * z
        out = np.where((r > 0.85) & (r < 1), 700, out)
        side = (np.abs(x - nx / 2) - nx / 5) / (0.15 * nx)
        lung = ((y - ny / 2) / (0.25 * ny)) ** 2 + side**2
        out = np.where(lung < 1, -800 + 30 * np.sin(z / 7.0), out)
        rng = np.random.default_rng(z0 * 7 + y0)
        out += rng.normal(0, 15, out.shape).astype(np.float32)
        result: np.ndarray = out.astype(np.int16)
        return result

    chunks = da.core.normalize_chunks((64, ny, nx), shape)
    return da.map_blocks(block, dtype=np.int16, chunks=chunks)


def _labels(shape: tuple[int, int, int]) -> Any:
    import dask.array as da

    nz, ny, nx = shape
    z, y, x = (da.arange(n, chunks=64 if i == 0 else n) for i, n in enumerate(shape))
    inside = (
        ((z[:, None, None] - nz / 2) / (0.3 * nz)) ** 2
        + ((y[None, :, None] - 0.6 * ny) / (0.15 * ny)) ** 2
        + ((x[None, None, :] - 0.35 * nx) / (0.12 * nx)) ** 2
    ) < 1
    return inside.astype(np.uint8)


def make_series(
    root: Path, shape: tuple[int, int, int], *, pyramid_target: int = 256
) -> BenchSeries:
    """Write the benchmark series into a local store at ``root`` and index it."""
    from atlas import records
    from atlas.index.build import build_index
    from atlas.ome.writer import LabelSpec, write_image
    from atlas.privacy import consent
    from atlas.storage import open_store

    store = open_store(root, site=SITE)
    digest = hashlib.sha256(repr(shape).encode()).hexdigest()
    subject, series_id = f"bench{digest[:12]}", f"2.25.{int(digest[12:40], 16)}"
    path = f"{COLLECTION}/{subject}/study/{series_id}.ome.zarr"
    if not store.exists(f"{path}/zarr.json"):
        image = write_image(
            store, path, _volume(shape), spacing=SPACING, modality="CT",
            pyramid_target=pyramid_target, overwrite=True,
            labels={"organ": LabelSpec(_labels(shape), names={1: "liver"})},
        )  # fmt: skip
        base = {"site": SITE, "collection": COLLECTION, "subject_id": subject,
                "study_id": "study", "series_id": series_id, "volume": 0}  # fmt: skip
        row = {
            **base, "image_store": store.url, "image_path": path, "modality": "CT",
            "body_part": "CHEST", "spacing_z": SPACING[0], "spacing_y": SPACING[1],
            "spacing_x": SPACING[2], "size_z": shape[0], "size_y": shape[1],
            "size_x": shape[2], "channels": 1, "dtype": "int16", "regularly_spaced": True,
            "levels": len(image.levels), "labels": ["organ"], "source_format": "synthetic",
        }  # fmt: skip
        records.write_table(store, "series", COLLECTION, series_id, [row])
        consent.set_collection_default(store, COLLECTION, ("research",))
        build_index(store)
    return BenchSeries(Path(root), series_id, path, shape)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _child(root: str, port: int, options: dict[str, Any], path: str) -> None:  # pragma: no cover
    import uvicorn

    from atlas.bench.serve_naive import add_naive_route
    from atlas.serve.app import create_app
    from atlas.serve.config import ServeConfig
    from atlas.storage import open_store

    store = open_store(root, site=SITE)
    base = Path(root).parent
    cfg = ServeConfig(
        stores={SITE: store}, key_file=base / "serve.key", audit_log=base / "audit.jsonl",
        revocations=base / "revoked.txt", **options,
    )  # fmt: skip
    app = create_app(cfg)
    add_naive_route(app, store, path, SPACING)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_process(series: BenchSeries, port: int, options: dict[str, Any]) -> Any:
    """Start the server of ``series`` on ``127.0.0.1:port`` in a child process; wait until up.

    ``options`` are :class:`~atlas.serve.config.ServeConfig` settings. The caller stops the
    process it gets back (``terminate`` then ``join``).
    """
    import httpx

    ctx = multiprocessing.get_context("spawn")
    args = (str(series.root), port, options, series.image_path)
    proc = ctx.Process(target=_child, args=args, daemon=True)
    proc.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise AtlasError(f"the benchmark server exited with code {proc.exitcode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise AtlasError("the benchmark server did not start within 120 s")
