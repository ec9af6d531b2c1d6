"""`atlas bench ...`: storage, kernel, ingest, index, stream and serve benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from atlas.cli.options import optional_positive_int, parse_shape, positive_int, shape_3d

app = typer.Typer(help="Benchmarks: every run measures its baselines in the same process.")


@app.command("kernels")
def kernels(
    out: Path = typer.Option(Path("bench-results/kernels"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny sizes (smoke run for CI)."),
) -> None:
    """Native C kernels vs their numpy reference: downsampling and CT windowing."""
    from atlas.bench.kernels import run

    run(out=out, quick=quick)


@app.command("write")
def write(
    out: Path = typer.Option(Path("bench-results/write"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny sizes, one repeat (smoke run for CI)."),
    s3: bool = typer.Option(True, help="Also measure a SeaweedFS S3 server started for the run."),
    shape: str = typer.Option(
        "",
        help="Volume z,y,x (default 128,512,512; quick 16,128,128).",
        callback=shape_3d,
        show_default=False,
    ),
    repeats: int | None = typer.Option(
        None, help="Repeats per case (default 3; quick 1).", callback=optional_positive_int
    ),
) -> None:
    """Write/read MB/s and compression for codec/chunk/shard choices vs zarr-python defaults."""
    from atlas.bench.write import run

    paths = run(
        out=out,
        quick=quick,
        s3=s3,
        shape=parse_shape(shape),
        repeats=repeats,
        progress=lambda msg: typer.echo(f"  measuring {msg}", err=True),
    )
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command("ingest")
def ingest(
    out: Path = typer.Option(Path("bench-results/ingest"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny study (smoke run for CI)."),
    shape: str = typer.Option(
        "",
        help="Study size z,y,x (default 300,512,512; quick 16,128,128).",
        callback=shape_3d,
        show_default=False,
    ),
    repeats: int = typer.Option(1, help="Repeats of each pipeline.", callback=positive_int),
    workers: int | None = typer.Option(
        None, help="Local worker processes (default: one per core).", callback=optional_positive_int
    ),
) -> None:
    """DICOM → OME-Zarr ingest vs a naive pydicom + numpy + zarr baseline, same run."""
    from atlas.bench.ingest import run

    paths = run(out=out, quick=quick, shape=parse_shape(shape), repeats=repeats, workers=workers)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command("index")
def index(
    out: Path = typer.Option(Path("bench-results/index"), help="Folder for JSON/Markdown/PNG."),
    images: int = typer.Option(
        1_000_000, "--images", help="Images (rows) across all sites.", callback=positive_int
    ),
    sites: int = typer.Option(30, "--sites", help="Number of sites.", callback=positive_int),
    lookups: int = typer.Option(
        200, "--lookups", help="Point lookups to time.", callback=positive_int
    ),
) -> None:
    """The sharded index at scale vs one unsharded Parquet file loaded whole (idc-index way)."""
    from atlas.bench.index import run

    paths = run(out=out, images=images, sites=sites, lookups=lookups)
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command("stream")
def stream(
    out: Path = typer.Option(Path("bench-results/stream"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny volumes, one repeat (smoke run for CI)."),
    s3: bool = typer.Option(
        True, help="Also measure a SeaweedFS server started for the run, plain and 20 ms away."
    ),
    repeats: int | None = typer.Option(
        None, help="Repeats per row (default 3; quick 1).", callback=optional_positive_int
    ),
) -> None:
    """Training streams vs naive zarr, MONAI, TorchIO and the tensorstore/numcodecs ceilings."""
    import dataclasses

    from atlas.bench.stream import Sizes, run

    sizes = Sizes.quick() if quick else Sizes.full()
    if repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=repeats)
    paths = run(
        out=out,
        quick=quick,
        s3=s3,
        sizes=sizes,
        progress=lambda msg: typer.echo(f"  measuring {msg}", err=True),
    )
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


@app.command("serve")
def serve(
    out: Path = typer.Option(Path("bench-results/serve"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny series, few requests (smoke run for CI)."),
    clients: int | None = typer.Option(
        None, help="Concurrent clients (default 16; quick 4).", callback=optional_positive_int
    ),
    shape: str = typer.Option(
        "",
        help="Series z,y,x (default 1000,512,512; quick 48,96,96).",
        callback=shape_3d,
        show_default=False,
    ),
    data: Path | None = typer.Option(
        None, help="Keep the series in this folder (reused by the next run)."
    ),
) -> None:
    """Tile server under N clients (cold/warm cache, raw ranges) vs a naive zarr+Pillow route."""
    from atlas.bench.serve import run

    paths = run(
        out=out,
        quick=quick,
        clients=clients,
        shape=parse_shape(shape),
        data=data,
        progress=lambda msg: typer.echo(f"  measuring {msg}", err=True),
    )
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
