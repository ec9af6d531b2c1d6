"""`atlas stream`: stream a catalog query as training batches and say how fast it went."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atlas.cli.options import (
    SiteOption,
    SitesOption,
    StoreOption,
    optional_positive_int,
    positive_int,
)
from atlas.errors import InvalidInput

SAMPLERS = ("slice", "patch", "balanced", "grid")


def _non_negative(value: int) -> int:
    if value is not None and value < 0:
        raise typer.BadParameter(f"must be 0 or more, got {value}")
    return value


def make_sampler(
    name: str,
    size: int | None,
    *,
    labels: list[str],
    axis: str,
    per_volume: int,
    level: int,
    overlap: float,
) -> Any:
    """The sampler the command line asks for (``size`` ``None``: 64, or whole slices)."""
    from atlas.stream import BalancedSampler, GridSampler, PatchSampler, SliceSampler

    cube = 64 if size is None else size
    if name == "slice":
        crop = None if size is None else (size, size)
        return SliceSampler(axis=axis, size=crop, per_volume=per_volume, level=level)
    if name == "patch":
        return PatchSampler(size=cube, per_volume=per_volume, level=level)
    if name == "balanced":
        if not labels:
            raise InvalidInput("--sampler balanced needs --label NAME (the labels to balance for)")
        return BalancedSampler(size=cube, labels=tuple(labels), per_volume=per_volume, level=level)
    if name == "grid":
        return GridSampler(size=cube, overlap=overlap, level=level)
    raise InvalidInput(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _batch_bytes(batch: Any) -> int:
    import torch

    return sum(v.nbytes for k, v in batch.items() if k != "meta" and isinstance(v, torch.Tensor))


def stream_command(
    query: str = typer.Argument(
        "", help="Catalog filter, e.g. 'modality == \"CT\"' (default: every volume)."
    ),
    release: str | None = typer.Option(
        None, "--release", help="Read the index versions pinned by this release."
    ),
    sampler: str = typer.Option("patch", "--sampler", help="slice, patch, balanced or grid."),
    size: int | None = typer.Option(
        None,
        "--size",
        help="Patch size in voxels per axis (default 64); for slices an in-plane crop "
        "(default: whole slices).",
        callback=optional_positive_int,
    ),
    batch: int = typer.Option(8, "--batch", help="Samples per batch.", callback=positive_int),
    workers: int = typer.Option(
        0,
        "--workers",
        help="DataLoader worker processes (0: read in this process, ahead on a thread).",
        callback=_non_negative,
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Batches to read (default: the whole epoch).",
        callback=optional_positive_int,
    ),
    label: list[str] = typer.Option(
        [], "--label", help="Label name to balance for (--sampler balanced; repeatable)."
    ),
    axis: str = typer.Option("axial", "--axis", help="Slice axis: axial, coronal or sagittal."),
    per_volume: int = typer.Option(
        1, "--per-volume", help="Samples per volume and epoch.", callback=positive_int
    ),
    level: int = typer.Option(0, "--level", help="Pyramid level.", callback=_non_negative),
    overlap: float = typer.Option(0.0, "--overlap", help="Grid overlap fraction in [0, 1)."),
    subset: str = typer.Option(
        "train", "--subset", help="Subject split: train, validation, test or all."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the samples and their order."),
    epoch: int = typer.Option(0, "--epoch", help="Epoch to read.", callback=_non_negative),
    strict: bool = typer.Option(
        False, "--strict", help="Fail when a site fails, instead of skipping its samples."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
) -> None:
    """Stream a query's samples as training batches; print samples/s, MB/s, first-batch time.

    Asks the catalog with purpose ai-training: subjects without that consent are never read.
    """
    from atlas.cli.catalog import resolve_stores
    from atlas.index.catalog import open_atlas
    from atlas.index.release import load_release
    from atlas.stream import AtlasDataset
    from atlas.stream.table import TRAINING_PURPOSE

    chosen = make_sampler(
        sampler, size, labels=label, axis=axis, per_volume=per_volume, level=level,
        overlap=overlap,
    )  # fmt: skip
    err = Console(stderr=True, soft_wrap=True)
    started = time.perf_counter()
    stores = resolve_stores(sites, store, site)
    versions = load_release(stores, release) if release else None
    atlas = open_atlas(stores, purpose=TRAINING_PURPOSE, versions=versions, strict=strict)
    if not atlas.sites:
        for name, why in sorted(atlas.missing.items()):
            err.print(f"[red]error:[/] site {escape(name)} did not answer: {escape(why)}")
        raise typer.Exit(2)
    for name, why in sorted(atlas.missing.items()):
        err.print(
            f"[yellow]site {escape(name)} did not answer, streaming without it: {escape(why)}[/]"
        )
    dataset = AtlasDataset(
        atlas, chosen, where=query or None, subset=None if subset == "all" else subset,
        seed=seed, strict=strict,
    )  # fmt: skip
    dataset.set_epoch(epoch)
    planned = time.perf_counter() - started
    if len(dataset) == 0:
        raise InvalidInput(
            "the query selects no volume that can be streamed for ai-training "
            "(check the filter, the subset and the consent recorded for ai-training)"
        )
    loader = dataset.loader(batch_size=batch, num_workers=workers)
    total = len(loader) if steps is None else min(steps, len(loader))
    n_samples = n_batches = n_bytes = 0
    first: float | None = None
    t0 = time.perf_counter()
    with Progress(
        TextColumn("[bold]batches"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} samples/s"),
        TextColumn("{task.fields[mbps]:.1f} MB/s"),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    ) as bar:
        job = bar.add_task("stream", total=total, rate=0.0, mbps=0.0)
        for item in loader:
            now = time.perf_counter()
            if first is None:
                first = now - t0
            n_batches += 1
            n_samples += len(item["meta"]["index"])
            n_bytes += _batch_bytes(item)
            seconds = max(now - t0, 1e-9)
            bar.update(job, advance=1, rate=n_samples / seconds, mbps=n_bytes / seconds / 1e6)
            if n_batches >= total:
                break
    seconds = max(time.perf_counter() - t0, 1e-9)
    report = dataset.report()
    figures = {
        "sampler": chosen.params(),
        "workers": workers,
        "batch": batch,
        "batches": n_batches,
        "samples": n_samples,
        "megabytes": n_bytes / 1e6,
        "seconds": seconds,
        "samples_per_s": n_samples / seconds,
        "mb_per_s": n_bytes / seconds / 1e6,
        "time_to_first_batch_s": first,
        "plan_s": planned,
        "epoch_samples": len(dataset),
        "report": report.as_dict(),
    }
    if as_json:
        typer.echo(json.dumps(figures))
        return
    title = f"atlas stream ({chosen.name} sampler, {workers} worker(s))"
    table = Table(title=title, show_header=False)
    table.add_row("batches / samples", f"{n_batches} / {n_samples} (epoch: {len(dataset)} samples)")
    table.add_row("samples/s", f"{figures['samples_per_s']:.1f}")
    table.add_row("MB/s", f"{figures['mb_per_s']:.1f}")
    table.add_row("time to first batch", "-" if first is None else f"{first:.2f} s")
    table.add_row("plan", f"{planned:.2f} s")
    table.add_row("seconds", f"{seconds:.2f}")
    Console().print(table)
    if report.skipped or report.errors:
        sites_table = Table(title="Sites that failed (samples skipped)")
        for col in ("site", "read", "skipped", "failed reads"):
            sites_table.add_column(col)
        for name in report.failed_sites:
            s = report.sites[name]
            sites_table.add_row(escape(name), str(s.read), str(s.skipped), str(s.errors))
        Console().print(sites_table)
