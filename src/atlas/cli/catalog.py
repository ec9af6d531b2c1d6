"""`atlas index|query|release|consent|erase`: the catalog on the command line."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.cli.options import SiteOption, SitesOption, StoreOption, memory_size, output_file
from atlas.errors import AtlasError, InvalidInput
from atlas.storage import Store

T = TypeVar("T")

#: The site name of a store that records none yet (nothing ingested into it).
DEFAULT_SITE = "local"

index_app = typer.Typer(help="Build and inspect the sharded index of a site.")
release_app = typer.Typer(help="Releases: named sets of pinned index versions across sites.")
consent_app = typer.Typer(help="The consent registry of a site.")


def _single_store(url: str, site: str | None) -> dict[str, Store]:
    """One store by URL under ``site``, or under the site it records when ``site`` is None."""
    from atlas.records.ownership import check_site, recorded_site
    from atlas.storage import open_store

    name = site or recorded_site(open_store(url)) or DEFAULT_SITE
    one = open_store(url, site=name)
    check_site(one, name)  # the store's recorded site, if any, must be the one named
    return {name: one}


def resolve_stores(sites: Path | None, store: str | None, site: str | None) -> dict[str, Store]:
    """Site name → store, from --store/--site or from sites.toml (else ./atlas-data)."""
    from atlas.config import load_sites

    if store is not None:
        return _single_store(store, site)
    configured = load_sites(sites)
    if not configured:
        return _single_store("atlas-data", site)
    return {s.name: s.store() for s in configured}


def _targets(sites: Path | None, store: str | None, site: str | None) -> dict[str, Store]:
    """The stores a per-site command acts on: the named site only, else every resolved site."""
    stores = resolve_stores(sites, store, site)
    return {site: stores[site]} if site in stores else stores


def _one(stores: dict[str, Store], site: str | None) -> tuple[str, Store]:
    if site and site in stores:
        return site, stores[site]
    if len(stores) == 1:
        return next(iter(stores.items()))
    raise InvalidInput(f"choose a site with --site: {sorted(stores)}")


def _error_line(text: str) -> None:
    """One ``error:`` line on stderr (the form every failed command ends with)."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(text)}")


def _fail_sites(failed: Mapping[str, str], what: str) -> None:
    """Name each site that failed, one ``error:`` line each, and exit with status 2."""
    for name, why in sorted(failed.items()):
        _error_line(f"site {name} {what}: {why}")
    raise typer.Exit(2)


def _per_site(
    targets: Mapping[str, Store], fn: Callable[[Store], T]
) -> tuple[dict[str, T], dict[str, str]]:
    """Run ``fn`` on each site; ``(results, site -> "Error: message")``."""
    done: dict[str, T] = {}
    failed: dict[str, str] = {}
    for name, st in targets.items():
        try:
            done[name] = fn(st)
        except (AtlasError, OSError, ValueError) as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    return done, failed


def _store_args(sites: Path | None, store: str | None, site: str) -> str:
    """The options that name one site again, for a command line we suggest."""
    if store is not None:
        return f"--store {shlex.quote(store)} --site {shlex.quote(site)}"
    if sites is not None:
        return f"--sites {shlex.quote(str(sites))} --site {shlex.quote(site)}"
    return f"--site {shlex.quote(site)}"


@index_app.command("build")
def index_build(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
    shards: int = typer.Option(
        0, help="Number of shards: a power of two from 1 to 4096 (0: chosen by size)."
    ),
    memory_limit: str = typer.Option(
        "2GB", help="DuckDB memory limit for the build.", callback=memory_size
    ),
) -> None:
    """Compact staging records into a new index version and publish it atomically."""
    from atlas.index.build import build_index
    from atlas.index.layout import check_shard_count

    if shards != 0:
        check_shard_count(shards)
    targets = _targets(sites, store, site)
    built, failed = _per_site(
        targets,
        lambda st: build_index(st, n_shards=shards or None, memory_limit=memory_limit),
    )
    if built:
        table = Table(title="Index builds")
        for col in ("site", "version", "parent", "shards", "series", "images", "annotations",
                    "MB", "s"):  # fmt: skip
            table.add_column(col)
        for name, r in built.items():
            table.add_row(
                name, r.version, r.parent or "-", str(r.n_shards), str(r.rows["series"]),
                str(r.rows["images"]), str(r.rows["annotations"]), f"{r.bytes / 1e6:.2f}",
                f"{r.seconds:.1f}",
            )  # fmt: skip
        Console().print(table)
    if failed:
        _fail_sites(failed, "was not built")


@index_app.command("gc")
def index_gc(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only list what would be removed; delete nothing."
    ),
) -> None:
    """Remove index versions that were never published and whose build is no longer running.

    Published versions (the current one and its history), versions pinned by a release and
    versions whose build holds a live lease are always kept.
    """
    from atlas.index.gc import collect_garbage

    targets = _targets(sites, store, site)
    reports, failed = _per_site(targets, lambda st: collect_garbage(st, dry_run=dry_run))
    title = "Index garbage (dry run: nothing deleted)" if dry_run else "Index garbage"
    table = Table(title=title)
    for col in ("site", "version", "action", "objects", "why"):
        table.add_column(col)
    gone = "would remove" if dry_run else "removed"
    for name, report in reports.items():
        for f in report.versions:
            table.add_row(name, f.version, gone if f.remove else "kept", str(f.objects),
                          escape(f.reason))  # fmt: skip
        for path in report.scratch_removed:
            table.add_row(name, "-", f"{gone} scratch", "-", escape(path))
    if reports:
        Console().print(table)
    if failed:
        _fail_sites(failed, "was not collected")


@index_app.command("show")
def index_show(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
) -> None:
    """Show each site's current index version, shards and row counts."""
    from atlas.index.catalog import open_atlas

    atlas = open_atlas(resolve_stores(sites, store, site), purpose="research")
    if not atlas.sites:
        _fail_sites(atlas.missing, "did not answer")
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
    output: Path | None = typer.Option(
        None, "--output", help="File for --format parquet.", callback=output_file
    ),
    release: str | None = typer.Option(
        None, "--release", help="Query the versions pinned by a release."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail if any site does not answer."),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
) -> None:
    """Query the federated catalog; every site answers in parallel."""
    from atlas.index.catalog import open_atlas
    from atlas.index.release import load_release

    if fmt not in ("table", "json", "parquet"):
        raise InvalidInput("--format must be table, json or parquet")
    if table not in ("series", "images", "annotations"):
        raise InvalidInput("--table must be series, images or annotations")
    if fmt == "parquet" and output is None:
        raise InvalidInput("--format parquet needs --output FILE")
    if limit < 0:
        raise InvalidInput("--limit must be 0 (all rows) or more")
    stores = resolve_stores(sites, store, site)
    versions = load_release(stores, release) if release else None
    atlas = open_atlas(stores, purpose=purpose, versions=versions, strict=strict)
    if not atlas.sites:
        _fail_sites(atlas.missing, "did not answer")
    query = getattr(atlas, table)
    if expression:
        query = query.where(expression)
    err = Console(stderr=True, soft_wrap=True)
    if count:
        result = query.count()
        if len(result.missing_sites) >= len(stores):
            _fail_sites(result.missing_sites, "did not answer")
        typer.echo(json.dumps({"count": result.value}) if fmt == "json" else str(result.value))
        empty = result.value == 0
    else:
        if limit:
            query = query.limit(limit)
        result = query.to_arrow()
        if len(result.missing_sites) >= len(stores):
            _fail_sites(result.missing_sites, "did not answer")
        rows = result.value
        empty = rows is None or rows.num_rows == 0
        if fmt == "parquet":
            import pyarrow.parquet as pq

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
    if empty:
        answered = {n: s for n, s in atlas.sites.items() if n not in result.missing_sites}
        _consent_notes(answered, purpose, lambda name: _store_args(sites, store, name))


def _consent_notes(answered: Mapping[str, Any], purpose: str, where: Callable[[str], str]) -> None:
    """After an empty result: say which collections no recorded consent covers for ``purpose``.

    Only the consent registry and the index's per-collection defaults are consulted, so the
    note reveals no count and no subject.
    """
    from atlas.privacy import consent

    err = Console(stderr=True, soft_wrap=True)
    for name, idx in sorted(answered.items()):
        defaults, _ = consent.load(idx.store)
        built = idx.manifest.get("collections")
        if built is not None:
            missing, stale = consent.gaps(defaults, built, purpose)
        else:  # an index built before manifests listed collections: the registry alone
            known = {c: defaults[c] for c in defaults} or {"<collection>": []}
            missing, stale = consent.gaps(defaults, known, purpose)[0], []
        args = where(name)
        if missing:
            unnamed = missing == ["<collection>"]
            first = "NAME" if unnamed else missing[0]
            which = "any collection" if unnamed else f"collection(s) {', '.join(missing)}"
            err.print(
                f"note: at site {escape(name)}, no recorded consent covers purpose "
                f"{escape(purpose)!r} for {escape(which)}: their rows "
                "are never returned for it. If that consent was given, record it with "
                f"`atlas consent set {escape(purpose)} --collection {escape(first)} "
                f"{escape(args)}`, then rebuild with `atlas index build {escape(args)}`."
            )
        if stale:
            err.print(
                f"note: at site {escape(name)}, consent for {escape(purpose)!r} was recorded "
                f"for collection(s) {escape(', '.join(stale))} after index version "
                f"{escape(idx.version)} was built; rebuild with "
                f"`atlas index build {escape(args)}`."
            )


def _print_rows(rows: object) -> None:
    from atlas.privacy.safe_text import visible  # values of other sites: never drive a terminal

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
    site: str | None = SiteOption,
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
    site: str | None = SiteOption,
) -> None:
    """Record consent scopes; rebuild the index for queries to see them."""
    from atlas.privacy import consent

    if (collection is None) == (subject is None):
        raise InvalidInput("give exactly one of --collection or --subject")
    from atlas.index.build import require_store

    _, st = _one(resolve_stores(sites, store, site), site)
    require_store(st)  # consent is recorded in a store that exists; it never creates one
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
    secret_env: str = typer.Option(
        "ATLAS_SITE_SECRET",
        "--secret-env",
        help="The variable holding the site secret (pseudonym and audit fingerprint).",
    ),
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
) -> None:
    """Erase a subject (GDPR Art. 17): images, labels, records, index rows; then verify."""
    from atlas.index.build import require_store
    from atlas.index.erase import erase_subject
    from atlas.privacy.pseudonyms import SiteKey

    if (subject is None) == (patient_id is None):
        raise InvalidInput("give exactly one of --subject or --patient-id")
    name, st = _one(resolve_stores(sites, store, site), site)
    require_store(st)  # a missing store is the first thing to say
    key = SiteKey.from_env(secret_env)
    if patient_id is not None:
        subject = key.subject_id(patient_id)
    report = erase_subject(st, subject or "", key=key)
    table = Table(title=f"Erased from site {name}", show_header=False)
    table.add_row("subject (fingerprint)", report.fingerprint)
    table.add_row("objects deleted", str(report.objects_deleted))
    table.add_row("index rows removed", str(report.index_rows_removed))
    table.add_row("new index version", report.new_version or "-")
    table.add_row("versions amended", ", ".join(report.versions_amended) or "-")
    table.add_row("unpublished versions removed", ", ".join(report.unpublished_removed) or "-")
    table.add_row(
        "verified", "no object in the store (any index version, published or not) holds the subject"
    )
    table.add_row("seconds", f"{report.seconds:.2f}")
    Console().print(table)
