"""`atlas index|query|release|consent|erase`: the catalog on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.storage import Store

SitesOption = typer.Option(None, "--sites", help="sites.toml (default: $ATLAS_SITES).")
StoreOption = typer.Option(None, "--store", help="A single store URL instead of sites.toml.")
SiteOption = typer.Option("local", "--site", help="Site name (with --store).")

index_app = typer.Typer(help="Build and inspect the sharded index of a site.")
release_app = typer.Typer(help="Releases: named sets of pinned index versions across sites.")
consent_app = typer.Typer(help="The consent registry of a site.")


def resolve_stores(sites: Path | None, store: str | None, site: str) -> dict[str, Store]:
    """site name → store, from --store/--site or from sites.toml."""
    from atlas.config import load_sites
    from atlas.storage import open_store

    if store is not None:
        return {site: open_store(store, site=site)}
    configured = load_sites(sites)
    if not configured:
        return {site: open_store("atlas-data", site=site)}
    return {s.name: s.store() for s in configured}


def _one(stores: dict[str, Store], site: str | None) -> tuple[str, Store]:
    if site and site in stores:
        return site, stores[site]
    if len(stores) == 1:
        return next(iter(stores.items()))
    raise typer.BadParameter(f"choose a site with --site: {sorted(stores)}")


@index_app.command("build")
def index_build(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
    shards: int = typer.Option(0, help="Number of shards (power of two; default: by size)."),
    memory_limit: str = typer.Option("2GB", help="DuckDB memory limit for the build."),
) -> None:
    """Compact staging records into a new index version and publish it atomically."""
    from atlas.index.build import build_index

    stores = resolve_stores(sites, store, site)
    targets = {site: stores[site]} if site in stores else stores
    table = Table(title="Index builds")
    for col in (
        "site",
        "version",
        "parent",
        "shards",
        "series",
        "images",
        "annotations",
        "MB",
        "s",
    ):
        table.add_column(col)
    for name, st in targets.items():
        r = build_index(st, n_shards=shards or None, memory_limit=memory_limit)
        table.add_row(
            name, r.version, r.parent or "-", str(r.n_shards), str(r.rows["series"]),
            str(r.rows["images"]), str(r.rows["annotations"]), f"{r.bytes / 1e6:.2f}",
            f"{r.seconds:.1f}",
        )  # fmt: skip
    Console().print(table)


@index_app.command("show")
def index_show(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
) -> None:
    """Show each site's current index version, shards and row counts."""
    from atlas.index.catalog import open_atlas

    atlas = open_atlas(resolve_stores(sites, store, site), purpose="research")
    table = Table(title="Index versions")
    for col in ("site", "version", "shards", "series", "images", "annotations"):
        table.add_column(col)
    for name, idx in sorted(atlas.sites.items()):
        t = idx.manifest["tables"]
        table.add_row(name, idx.version, str(idx.manifest["n_shards"]), str(t["series"]["rows"]),
                      str(t["images"]["rows"]), str(t["annotations"]["rows"]))  # fmt: skip
    Console().print(table)
    for name, why in atlas.missing.items():
        Console(stderr=True).print(f"[yellow]site {name}: {escape(why)}[/]")


def query_command(
    expression: str = typer.Argument(
        "", help='Filter, e.g. \'modality == "CT" and label == "liver tumour"\'.'
    ),
    table: str = typer.Option("images", "--table", help="series, images or annotations."),
    purpose: str = typer.Option("research", "--purpose", help="Why you query (consent scope)."),
    count: bool = typer.Option(False, "--count", help="Only count the rows."),
    limit: int = typer.Option(20, "--limit", help="Rows to return (0: all)."),
    fmt: str = typer.Option("table", "--format", help="table, json or parquet."),
    output: Path | None = typer.Option(None, "--output", help="File for --format parquet."),
    release: str | None = typer.Option(
        None, "--release", help="Query the versions pinned by a release."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail if any site does not answer."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
) -> None:
    """Query the federated catalog; every site answers in parallel."""
    from atlas.index.catalog import open_atlas
    from atlas.index.release import load_release

    if fmt not in ("table", "json", "parquet"):
        raise typer.BadParameter("format must be table, json or parquet")
    stores = resolve_stores(sites, store, site)
    versions = load_release(stores, release) if release else None
    atlas = open_atlas(stores, purpose=purpose, versions=versions, strict=strict)
    query = getattr(atlas, table) if table in ("series", "images", "annotations") else None
    if query is None:
        raise typer.BadParameter("table must be series, images or annotations")
    if expression:
        query = query.where(expression)
    err = Console(stderr=True)
    if count:
        result = query.count()
        typer.echo(json.dumps({"count": result.value}) if fmt == "json" else str(result.value))
    else:
        if limit:
            query = query.limit(limit)
        result = query.to_arrow()
        rows = result.value
        if fmt == "parquet":
            import pyarrow.parquet as pq

            if output is None:
                raise typer.BadParameter("--format parquet needs --output FILE")
            if rows is not None:
                pq.write_table(rows, output)
            err.print(f"wrote {0 if rows is None else rows.num_rows} rows to {output}")
        elif fmt == "json":
            json.dump(rows.to_pylist() if rows is not None else [], sys.stdout, default=str)
            sys.stdout.write("\n")
        else:
            _print_rows(rows)
    if result.partial:
        for name, why in result.missing_sites.items():
            err.print(f"[yellow]partial result: site {name} did not answer: {escape(why)}[/]")


def _print_rows(rows: object) -> None:
    from atlas.ingest.safe_text import visible  # values of other sites: never drive a terminal

    console = Console()
    if rows is None or rows.num_rows == 0:  # type: ignore[attr-defined]
        console.print("no rows")
        return
    preferred = ["site", "collection", "subject_id", "series_id", "image_id", "z_index",
                 "modality", "labels", "label_name", "voxel_count", "image_path"]  # fmt: skip
    cols = [c for c in preferred if c in rows.column_names][:8]  # type: ignore[attr-defined]
    table = Table(title=f"{rows.num_rows} row(s)")  # type: ignore[attr-defined]
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in rows.to_pylist():  # type: ignore[attr-defined]
        table.add_row(*(escape(visible(str(r.get(c)))) for c in cols))
    console.print(table)


@release_app.command("create")
def release_create(
    name: str = typer.Argument(..., help="Release name."),
    note: str = typer.Option("", help="What the release is for."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
) -> None:
    """Pin every site's current index version under NAME."""
    from atlas.index.release import create_release

    pinned = create_release(resolve_stores(sites, store, site), name, note)
    for s, v in sorted(pinned.items()):
        typer.echo(f"{s}: {v}")


@consent_app.command("set")
def consent_set(
    scopes: str = typer.Argument(..., help="Comma-separated scopes (research,ai-training,...)."),
    collection: str | None = typer.Option(None, help="Set a collection's default scopes."),
    subject: str | None = typer.Option(None, help="Set one subject's scopes (pseudonym)."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
) -> None:
    """Record consent scopes; rebuild the index for queries to see them."""
    from atlas.index import consent

    if (collection is None) == (subject is None):
        raise typer.BadParameter("give exactly one of --collection or --subject")
    _, st = _one(resolve_stores(sites, store, site), site)
    values = [s.strip() for s in scopes.split(",") if s.strip()]
    if collection:
        consent.set_collection_default(st, collection, values)
    else:
        consent.set_subject(st, subject or "", values)
    typer.echo("recorded; run `atlas index build` to apply")


def erase_command(
    subject: str | None = typer.Option(None, "--subject", help="The subject's pseudonym."),
    patient_id: str | None = typer.Option(
        None,
        "--patient-id",
        help="The original patient id (hashed with the site key, never stored).",
    ),
    secret_env: str = typer.Option("ATLAS_SITE_SECRET", "--secret-env"),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str = SiteOption,
) -> None:
    """Erase a subject (GDPR Art. 17): images, labels, records, index rows; then verify."""
    from atlas.index.erase import erase_subject

    if (subject is None) == (patient_id is None):
        raise typer.BadParameter("give exactly one of --subject or --patient-id")
    if patient_id is not None:
        from atlas.ingest.deid import Deidentifier

        subject = Deidentifier.from_env(secret_env).subject_id(patient_id)
    name, st = _one(resolve_stores(sites, store, site), site)
    report = erase_subject(st, subject or "")
    table = Table(title=f"Erased from site {name}", show_header=False)
    table.add_row("subject (fingerprint)", report.fingerprint)
    table.add_row("objects deleted", str(report.objects_deleted))
    table.add_row("index rows removed", str(report.index_rows_removed))
    table.add_row("new index version", report.new_version or "-")
    table.add_row("versions amended", ", ".join(report.versions_amended) or "-")
    table.add_row("verified", "no object or index version mentions the subject")
    table.add_row("seconds", f"{report.seconds:.2f}")
    Console().print(table)
