"""The main job on the embedded default store: what ``make demo`` / ``atlas demo`` runs.

For now: generate a CT-like phantom with labels, write it as sharded OME-Zarr v0.5 to a local
directory, open it again, print what was written, verify the round trip and render one slice
(soft-tissue window, label overlay) to PNG.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from atlas.kernels import window_to_uint8
from atlas.ome import LabelSpec, OmeImage, open_image, write_image
from atlas.storage import Store, open_store
from atlas.testing.phantom import LABEL_COLORS, LABEL_NAMES, make_phantom


def stored_bytes(store: Store, prefix: str) -> int:
    """Total size in bytes of the objects below ``prefix``."""
    fs = store.fs
    return int(sum(fs.du(store.fs_path(prefix), total=False).values()))


def image_table(image: OmeImage) -> Table:
    """A rich table describing an image's levels and layout."""
    meta = image.metadata
    table = Table(title=f"{image.store.url}/{image.path}")
    for col in ("level", "shape", "chunk (read)", "shard (object)", "scale mm", "labels"):
        table.add_column(col)
    for i, lv in enumerate(meta.levels):
        table.add_row(
            lv.path,
            "x".join(map(str, lv.shape)),
            "x".join(map(str, lv.chunks)),
            "x".join(map(str, lv.shards)),
            ", ".join(f"{s:g}" for s in lv.scale),
            ", ".join(meta.labels) if i == 0 else "",
        )
    table.caption = (
        f"dtype {meta.dtype}, codec {meta.layout.get('codec', '?')}"
        f" level {meta.layout.get('level', '?')}, crc32c {meta.layout.get('checksum', '?')}; "
        f"windows: {', '.join(w.name for w in meta.windows) or '-'}"
    )
    return table


def render_slice(image: OmeImage, z: int, out: Path, label: str | None = None) -> Path:
    """Render slice ``z`` of level 0 with its first window preset and a label overlay."""
    from matplotlib.image import imsave

    meta = image.metadata
    plane = image.read(0, (slice(z, z + 1),))[0]
    w = meta.windows[0] if meta.windows else None
    lo, hi = meta.value_range or (float(plane.min()), float(plane.max()))
    center, width = (w.center, w.width) if w else ((lo + hi) / 2, max(hi - lo, 1.0))
    grey = window_to_uint8(plane, center, width)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if label is not None:
        lab = image.label(label)
        mask = lab.read(0, (slice(z, z + 1),))[0]
        for value, rgba in lab.info.colors.items():
            sel = mask == value
            if value and sel.any():
                alpha = 0.45
                rgb[sel] = (1 - alpha) * rgb[sel] + alpha * np.asarray(rgba[:3], np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    imsave(out, np.clip(rgb, 0, 255).astype(np.uint8))
    return out


def run_demo(
    data_dir: Path, shape: tuple[int, int, int], *, seed: int = 0, console: Console | None = None
) -> dict[str, Any]:
    """Write, read back and render a phantom; returns the facts it printed."""
    console = console or Console()
    store = open_store(data_dir)
    path = "demo/phantom-ct.ome.zarr"
    phantom = make_phantom(shape, seed=seed)
    console.print(f"[bold]Writing[/] a {shape} int16 CT phantom with labels to {store.url}/{path}")
    t0 = time.perf_counter()
    image = write_image(
        store,
        path,
        phantom.image,
        spacing=phantom.spacing,
        origin=phantom.origin,
        modality="CT",
        labels={"segmentation": LabelSpec(phantom.labels, names=LABEL_NAMES, colors=LABEL_COLORS)},
        overwrite=True,
    )
    seconds = time.perf_counter() - t0
    image = open_image(store, path)
    meta = image.metadata
    raw = sum(int(np.prod(lv.shape)) * np.dtype(meta.dtype).itemsize for lv in meta.levels)
    on_disk = sum(stored_bytes(store, f"{path}/{lv.path}") for lv in meta.levels)
    back = image.read(0)
    exact = bool(np.array_equal(back, np.asarray(phantom.image.compute())))
    z = int(meta.levels[0].shape[0] * 0.7)
    png = render_slice(image, z, data_dir / "demo" / "slice.png", "segmentation")
    console.print(image_table(image))
    seg = image.label("segmentation")
    facts = {
        "path": f"{store.url}/{path}",
        "shape": meta.shape,
        "levels": len(meta.levels),
        "write_seconds": round(seconds, 2),
        "write_MBps": round(raw / seconds / 1e6, 1),
        "compression_ratio": round(raw / max(on_disk, 1), 2),
        "round_trip_exact": exact,
        "labels": {seg.info.names.get(k, str(k)): v for k, v in seg.info.voxel_counts.items()},
        "png": str(png),
    }
    summary = Table(title="Demo summary", show_header=False)
    for k, v in facts.items():
        summary.add_row(k, str(v))
    console.print(summary)
    if not exact:
        console.print("[red]round trip mismatch[/]")
        raise SystemExit(1)
    facts["ingest"] = ingest_demo(store, data_dir, console)
    return facts


DEMO_SECRET_ENV = "ATLAS_SITE_SECRET"


def demo_sources_dir(data_dir: Path) -> Path:
    """Where the demo writes its synthetic DICOM study: beside the store, never inside it.

    Source data (with its original patient ids) must never live in a store: the store holds
    only what ingest de-identified.
    """
    return Path(data_dir).resolve().parent / "atlas-demo-sources"


def ingest_demo(store: Store, data_dir: Path, console: Console) -> dict[str, Any]:
    """Generate a synthetic DICOM study (CT + SEG + RTSTRUCT + NIfTI) and ingest it.

    The study is written to :func:`demo_sources_dir` (beside the store) and read from there.
    """
    import os

    from atlas import records
    from atlas.ingest.driver import ingest
    from atlas.ingest.series import IngestOptions
    from atlas.testing.synthetic import make_study

    if not os.environ.get(DEMO_SECRET_ENV):
        os.environ[DEMO_SECRET_ENV] = "atlas-demo-key-not-for-real-data-000000"
        console.print(
            f"[yellow]${DEMO_SECRET_ENV} is not set: using a fixed demo key. Set your site's "
            "own secret before ingesting real data.[/]"
        )
    sources = demo_sources_dir(data_dir)
    legacy = Path(data_dir) / "demo-dicom"  # where earlier versions wrote it: inside the store
    if legacy.is_dir():
        import shutil

        shutil.rmtree(legacy)
        console.print(f"[yellow]Removed the old demo sources from the store ({legacy}).[/]")
    study = make_study(sources, shape=(64, 256, 256), seed=7)
    assert study.seg_file and study.rtstruct_file and study.nifti_file
    console.print(
        f"[bold]Ingesting[/] a synthetic DICOM study ({len(study.ct_files)} CT slices, SEG, "
        f"RTSTRUCT, NIfTI mask; sources in {sources}) as site 'demo', collection 'demo'"
    )
    summary = ingest(
        [study.ct_files[0].parent, study.seg_file, study.rtstruct_file],
        store=store,
        site="demo",
        collection="demo",
        labels=[study.nifti_file],
        options=IngestOptions(secret_env=DEMO_SECRET_ENV),
    )
    images = records.read_table(store, "images", "demo")
    notes = records.read_table(store, "annotations", "demo")
    image = open_image(store, summary.images[0])
    table = Table(title="Ingest summary", show_header=False)
    facts: dict[str, Any] = {
        "series written": len(summary.written),
        "series skipped (already ingested)": len(summary.skipped),
        "files quarantined": len(summary.quarantined),
        "image": summary.images[0],
        "shape": image.metadata.shape,
        "label images": ", ".join(image.label_names),
        "staging image records": images.num_rows,
        "staging annotation records": notes.num_rows,
        "seconds": round(summary.seconds, 1),
    }
    for k, v in facts.items():
        table.add_row(k, str(v))
    console.print(table)
    facts["index"] = index_demo(store, console)
    return facts


def index_demo(store: Store, console: Console) -> dict[str, Any]:
    """Record consent for the demo collection, build the index, query it."""
    from atlas.index.build import build_index
    from atlas.index.catalog import open_atlas
    from atlas.privacy import consent

    consent.set_collection_default(store, "demo", ["research", "ai-training"])
    built = build_index(store)
    atlas = open_atlas({"demo": store}, purpose="ai-training")
    query = 'modality == "CT" and label == "liver tumour"'
    facts: dict[str, Any] = {
        "index version": built.version,
        "rows (series / images / annotations)": (
            f"{built.rows['series']} / {built.rows['images']} / {built.rows['annotations']}"
        ),
        f"images where {query}": atlas.images.where(query).count().value,
        "purpose": "ai-training (consent recorded for the collection)",
    }
    table = Table(title="Index and query", show_header=False)
    for k, v in facts.items():
        table.add_row(k, str(v))
    console.print(table)
    return facts
