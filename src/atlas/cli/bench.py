"""`atlas bench ...`: storage and kernel benchmarks (results: JSON, Markdown table, PNG plots)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Benchmarks: every run measures its baselines in the same process.")


@app.command("kernels")
def kernels(
    out: Path = typer.Option(Path("bench-results/kernels"), help="Folder for JSON/Markdown/PNG."),
    quick: bool = typer.Option(False, help="Tiny sizes (smoke run for CI)."),
) -> None:
    """Native C kernels vs their numpy reference: downsampling and CT windowing."""
    from atlas.bench.kernels import run

    run(out=out, quick=quick)
