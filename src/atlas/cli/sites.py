"""`atlas sites ...`: list the configured data providers and check that each one answers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.cli.options import SitesOption
from atlas.config import Site, load_sites
from atlas.errors import AtlasError

app = typer.Typer(help="Data providers (sites) from sites.toml (--sites or $ATLAS_SITES).")


@dataclass(frozen=True)
class SiteCheck:
    """Outcome of checking one site: reachable/authorised, probe round trip, latencies (ms)."""

    site: str
    ok: bool
    reach_ms: float
    detail: str


def check_site(site: Site, probe: bool = True) -> SiteCheck:
    """Check one site: the store answers with these credentials; optionally a write/read/delete."""
    store = site.store()
    t0 = time.perf_counter()
    try:
        store.ensure_reachable()
        reach = (time.perf_counter() - t0) * 1000
        if not probe:
            return SiteCheck(site.name, True, reach, "reachable, credentials accepted")
        result = store.probe()
        detail = (
            f"write {result.write_ms:.1f} ms, read {result.read_ms:.1f} ms, "
            f"list {result.list_ms:.1f} ms, delete {result.delete_ms:.1f} ms"
        )
        return SiteCheck(site.name, result.ok, reach, detail if result.ok else "probe mismatch")
    except AtlasError as exc:
        return SiteCheck(
            site.name, False, (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}"
        )


def print_checks(console: Console, sites: tuple[Site, ...], probe: bool) -> bool:
    """Check every site in parallel, print a table; True when all are healthy."""
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(sites)))) as pool:
        results = list(pool.map(lambda s: check_site(s, probe), sites))
    table = Table(title="Site checks" + (" (write/read/delete probe)" if probe else ""))
    for col in ("site", "status", "reach ms", "detail"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.site,
            "[green]ok[/]" if r.ok else "[red]FAILED[/]",
            f"{r.reach_ms:.1f}",
            escape(r.detail),
        )
    console.print(table)
    return all(r.ok for r in results)


@app.command("list")
def list_sites(sites: Path | None = SitesOption) -> None:
    """List the configured sites (no network access)."""
    configured = load_sites(sites)
    table = Table(title=f"{len(configured)} site(s)")
    for col in ("name", "country", "store", "endpoint", "credentials from"):
        table.add_column(col)
    for s in configured:
        loc = s.location
        creds = (
            "anonymous"
            if loc.anonymous
            else (f"${loc.key_env}, ${loc.secret_env}" if s.store().uses_credentials else "-")
        )
        table.add_row(s.name, s.country, s.url, loc.endpoint or "-", creds)
    Console().print(table)


@app.command("check")
def check(
    sites: Path | None = SitesOption,
    site: list[str] = typer.Option([], "--site", help="Only these site(s)."),
    probe: bool = typer.Option(True, help="Write, read, list and delete a probe object."),
) -> None:
    """Check reachability, credentials and a write/read/delete round trip for each site."""
    configured = load_sites(sites)
    if site:
        known = {s.name for s in configured}
        unknown = [n for n in site if n not in known]
        if unknown:
            raise typer.BadParameter(f"unknown site(s) {unknown}; known: {sorted(known)}")
        configured = tuple(s for s in configured if s.name in site)
    if not configured:
        typer.echo("No sites configured (use --sites FILE or $ATLAS_SITES).")
        raise typer.Exit(1)
    if not print_checks(Console(), configured, probe):
        raise typer.Exit(1)
