"""The ``atlas`` command line (typer). Each command is a thin shell over the Python API."""

from __future__ import annotations

import importlib
import sys
from importlib import metadata
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas import __version__
from atlas.cli import access as access_cli
from atlas.cli import bench as bench_cli
from atlas.cli import catalog as catalog_cli
from atlas.cli import export as export_cli
from atlas.cli import ingest as ingest_cli
from atlas.cli import serve as serve_cli
from atlas.cli import sites as sites_cli
from atlas.cli import stream as stream_cli
from atlas.cli.options import AtlasGroup, parse_shape, run, shape_3d

app = typer.Typer(
    cls=AtlasGroup,
    name="atlas",
    help="Atlas: a federated cancer-imaging atlas on OME-Zarr.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_cli.app, name="bench")
app.add_typer(sites_cli.app, name="sites")
app.command("ingest")(ingest_cli.ingest_command)
app.add_typer(catalog_cli.index_app, name="index")
app.add_typer(catalog_cli.release_app, name="release")
app.add_typer(catalog_cli.consent_app, name="consent")
app.command("query")(catalog_cli.query_command)
app.command("erase")(catalog_cli.erase_command)
app.command("export")(export_cli.export_command)
app.command("stream")(stream_cli.stream_command)
app.command("serve")(serve_cli.serve_command)
app.add_typer(access_cli.token_app, name="token")
app.add_typer(access_cli.audit_app, name="audit")


@app.callback()
def _root(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="ATLAS_DEBUG",
        help="Print the Python traceback of an internal error (or set ATLAS_DEBUG=1).",
    ),
) -> None:
    """Atlas: a federated cancer-imaging atlas on OME-Zarr."""


BACKENDS = ("numpy", "zarr", "numcodecs", "tensorstore", "fsspec", "s3fs", "dask", "distributed")


@app.command()
def version() -> None:
    """Print the Atlas version."""
    typer.echo(f"atlas {__version__}")


@app.command()
def doctor(
    sites: Path | None = typer.Option(None, "--sites", help="sites.toml (default: $ATLAS_SITES)."),
) -> None:
    """Report installed backends, whether the native kernels are compiled, and site health."""
    from atlas.config import load_sites
    from atlas.kernels import native_available

    console = Console()
    table = Table(title="Backends")
    table.add_column("component")
    table.add_column("status")
    for name in BACKENDS:
        try:
            importlib.import_module(name)
            table.add_row(name, f"[green]{metadata.version(name)}[/]")
        except ImportError:
            table.add_row(name, "[yellow]not installed[/]")
    table.add_row(
        "native kernels",
        "[green]compiled[/]" if native_available() else "[red]not compiled (pip install -e .)[/]",
    )
    console.print(table)
    configured = load_sites(sites)
    if not configured:
        console.print("No sites configured (use --sites FILE or $ATLAS_SITES).")
        return
    ok = sites_cli.print_checks(console, configured, probe=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def demo(
    data_dir: Path = typer.Option(
        Path("atlas-data"), help="Local store directory for the demo image."
    ),
    shape: str = typer.Option("128,512,512", help="Phantom size z,y,x.", callback=shape_3d),
    seed: int = typer.Option(0, help="Phantom seed."),
) -> None:
    """Write a generated CT-like volume with labels as OME-Zarr, read it back, render a slice."""
    from atlas.demo import run_demo

    dims = parse_shape(shape)
    assert dims is not None  # the option has a default
    run_demo(data_dir, dims, seed=seed, console=Console())


@app.command()
def info(
    store: str = typer.Argument(..., help="Store URL or directory."),
    path: str = typer.Argument(..., help="Image path inside the store (ends in .ome.zarr)."),
) -> None:
    """Show an image's metadata: levels, layout, windows, labels."""
    from atlas.demo import image_table
    from atlas.ome import open_image

    image = open_image(store, path)
    Console().print(image_table(image))


def main() -> None:
    """Entry point: run the CLI; every error is one ``error:`` line (exit code 2, internal: 3)."""
    stderr = Console(stderr=True, soft_wrap=True)

    def error(message: str) -> None:
        stderr.print(f"[red]error:[/] {escape(message)}")

    raise SystemExit(run(app, sys.argv[1:], error))


if __name__ == "__main__":  # pragma: no cover
    main()
