"""`atlas ingest`: DICOM / NIfTI sources → de-identified OME-Zarr + staging records."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atlas.cli.options import optional_positive_int, output_file


def ingest_command(
    sources: list[Path] = typer.Argument(
        ..., help="Directories, DICOM files, DICOMDIR, zip archives, NIfTI files."
    ),
    site: str = typer.Option(..., "--site", help="Site (data provider) name."),
    collection: str = typer.Option(
        ..., "--collection", help="Collection name (part of every path)."
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Store URL (default: the site's store from sites.toml, else ./atlas-data).",
    ),
    sites: Path | None = typer.Option(None, "--sites", help="sites.toml (default: $ATLAS_SITES)."),
    labels: list[Path] = typer.Option(
        [], "--labels", help="NIfTI label masks to attach to matching images."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Local worker processes (default: one per core).",
        callback=optional_positive_int,
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="dask.distributed scheduler address (tcp://host:port)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit non-zero if anything was quarantined or busy."
    ),
    allow_burned_in: bool = typer.Option(
        False, "--allow-burned-in", help="Ingest images that may carry burned-in text."
    ),
    secret_env: str = typer.Option(
        "ATLAS_SITE_SECRET", "--secret-env", help="Environment variable holding the site key."
    ),
    max_image_bytes: str = typer.Option(
        "2GiB",
        "--max-image-bytes",
        help="Largest decoded image (and input file) to read, e.g. 512MB or 4GiB; "
        "larger inputs are quarantined before anything is allocated.",
    ),
    report: Path = typer.Option(
        Path("atlas-ingest-report.json"),
        "--report",
        help="Local JSON report (quarantine reasons).",
        callback=output_file,
    ),
    subject_map: Path | None = typer.Option(
        None,
        "--subject-map",
        help="CSV file 'kind,key,patient_id' (kind: path, series or study) assigning patients "
        "the data does not name; see docs/ingest.md.",
    ),
) -> None:
    """Ingest DICOM (and NIfTI) series with their segmentations, de-identified, in parallel.

    Rerunning the same command skips finished series and completes interrupted ones.
    """
    import os

    from atlas.config import load_sites
    from atlas.errors import ConfigError, InvalidInput
    from atlas.ingest.driver import ingest, write_report
    from atlas.ingest.safe_io import parse_size
    from atlas.ingest.series import IngestOptions, make_deidentifier
    from atlas.ingest.subjects import SubjectMap
    from atlas.storage import open_store

    if workers is not None and scheduler is not None:
        raise typer.BadParameter("give --workers or --scheduler, not both")
    try:
        limit = parse_size(max_image_bytes)
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-image-bytes") from None
    if store is not None:
        target = open_store(store, site=site)
    else:
        configured = {s.name: s for s in load_sites(sites)}
        target = (
            configured[site].store() if site in configured else open_store("atlas-data", site=site)
        )
    if target.process_local:
        raise ConfigError(
            f"{target.url} would end with this command and take the images with it: "
            "ingest into a folder or an S3 store"
        )
    if workers is None and scheduler is None:
        workers = os.cpu_count() or 1  # the command uses every core; the Python API does not
    options = IngestOptions(
        secret_env=secret_env, allow_burned_in=allow_burned_in, max_image_bytes=limit
    )
    make_deidentifier(options)  # a missing or weak key fails here, before any work starts
    mapping = SubjectMap.from_csv(subject_map) if subject_map is not None else None
    console = Console(stderr=True)
    console.print(
        f"Ingesting into [bold]{escape(target.url)}[/] as site {site!r}, collection {collection!r}"
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]series"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[files]} files"),
        TextColumn("{task.fields[mbps]:.1f} MB/s"),
        TextColumn("[red]{task.fields[errors]} quarantined"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        job = bar.add_task("ingest", total=None, files=0, mbps=0.0, errors=0)
        files = 0

        def progress(outcome, summary, total) -> None:  # type: ignore[no-untyped-def]
            nonlocal files
            files += outcome.n_files
            seconds = max(time.perf_counter() - started, 1e-6)
            bar.update(
                job,
                total=total,
                advance=1,
                files=files,
                mbps=summary.bytes_in / seconds / 1e6,
                errors=len(summary.quarantined),
            )

        summary = ingest(
            [str(s) for s in sources],
            store=target,
            site=site,
            collection=collection,
            labels=[str(p) for p in labels],
            workers=workers,
            scheduler=scheduler,
            options=options,
            progress=progress,
            subject_map=mapping,
        )
    path = write_report(summary, report)
    out = Console()
    table = Table(title="Ingest summary", show_header=False)
    table.add_row("series written", str(len(summary.written)))
    table.add_row("series skipped (already done)", str(len(summary.skipped)))
    table.add_row("series failed", str(len(summary.failed)))
    if summary.busy:
        table.add_row("series being ingested by another run", str(len(summary.busy)))
    table.add_row("files seen", str(summary.files_seen))
    table.add_row("files quarantined", str(len(summary.quarantined)))
    table.add_row("images written", str(sum(len(o.images) for o in summary.written)))
    table.add_row("MB in / out", f"{summary.bytes_in / 1e6:.1f} / {summary.bytes_out / 1e6:.1f}")
    table.add_row("warnings (values not shown)", str(sum(summary.warnings.values())))
    table.add_row("seconds", f"{summary.seconds:.1f}")
    table.add_row("report", str(path))
    out.print(table)
    if summary.busy:
        console.print(
            f"[yellow]{len(summary.busy)} series were being ingested by another run at the same "
            "time; run the command again after it ends to check them.[/]"
        )
    if summary.subject_map_unused:
        console.print(
            f"[yellow]{summary.subject_map_unused} subject-map entries matched no input.[/]"
        )
    if summary.quarantined:
        reasons = Counter(q.reason for q in summary.quarantined)
        qt = Table(title="Quarantined (see the report for every file)")
        qt.add_column("files", justify="right")
        qt.add_column("reason")
        for reason, n in reasons.most_common(15):
            qt.add_row(str(n), escape(reason))
        out.print(qt)
    if strict and (summary.quarantined or summary.failed or summary.busy):
        raise typer.Exit(1)
