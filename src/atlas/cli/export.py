"""`atlas export`: one series of the catalog as NIfTI volumes or PNG slices."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from atlas.cli.catalog import resolve_stores
from atlas.cli.options import SiteOption, SitesOption, StoreOption


def export_command(
    series_id: str = typer.Argument(..., help="The series id, as `atlas query` shows it."),
    fmt: str = typer.Option("nifti", "--format", help="nifti or png."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if absent)."),
    volume: int = typer.Option(0, "--volume", help="Volume of the series (0: the first)."),
    level: int = typer.Option(0, "--level", help="Pyramid level (0: full resolution)."),
    labels: bool = typer.Option(False, "--labels", help="Also write each label image as a mask."),
    window: str | None = typer.Option(
        None, "--window", help="PNG window: ct-soft-tissue, lung, bone, brain, auto, or W,C."
    ),
    purpose: str = typer.Option("research", "--purpose", help="Why you export (consent scope)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
) -> None:
    """Export one series (NIfTI with a RAS affine, or windowed axial PNG slices)."""
    from atlas.export import export_series, parse_export_window

    chosen = parse_export_window(window, None) if window is not None else None
    stores = resolve_stores(sites, store, site)
    if site is not None and site in stores:
        stores = {site: stores[site]}
    result = export_series(
        stores, series_id, output, fmt=fmt, purpose=purpose, volume=volume, level=level,
        labels=labels, window=chosen, overwrite=overwrite,
    )  # fmt: skip
    console = Console(soft_wrap=True)
    shape = " x ".join(str(s) for s in result.shape)
    spacing = " x ".join(f"{s:.3g}" for s in result.spacing)
    for name in result.files:
        console.print(escape(f"wrote {output / name}"))
    extra = f", window {result.window[0]:g},{result.window[1]:g}" if result.window else ""
    console.print(
        escape(
            f"series {result.series_id} (site {result.site}): level {level}, "
            f"{shape} voxels (z, y, x), {spacing} mm{extra}; recorded in the audit log"
        )
    )
