"""`atlas serve`: the HTTP server (catalog API, tiles, raw OME-Zarr, the viewer) on uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from atlas.cli.options import SiteOption, SitesOption, StoreOption, positive_int


def serve_command(
    sites: Path | None = SitesOption,
    store: str | None = StoreOption,
    site: str | None = SiteOption,
    config: Path | None = typer.Option(
        None,
        "--config",
        help="serve.toml (key, audit log, revocations, limits, CORS; default: files in the "
        "current folder).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(
        1, "--workers", callback=positive_int, help="Worker processes (each its own caches)."
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug."
    ),
) -> None:
    """Serve the atlas over HTTP: catalog API, MPR tiles, raw OME-Zarr and the web viewer.

    Every route but /healthz and /docs needs a token (atlas token create ...); every
    request is written to the audit trail (atlas audit show).
    """
    from atlas.cli.catalog import resolve_stores
    from atlas.config import load_sites
    from atlas.errors import InvalidInput
    from atlas.serve.config import load_serve_config
    from atlas.serve.server import ServerSpec, run_server

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise InvalidInput("--log-level must be critical, error, warning, info or debug")
    stores = resolve_stores(sites, store, site)
    if store is not None or not load_sites(sites):
        # one store: --store, or the default ./atlas-data when no sites file is configured
        (name,) = stores
        url = store if store is not None else str(Path("atlas-data").resolve())
        spec = ServerSpec(store=url, site=name, config=_text(config), base=str(Path.cwd()))
    else:
        spec = ServerSpec(sites=_text(sites), config=_text(config), base=str(Path.cwd()))
    load_serve_config(config, stores, base=Path.cwd())  # a bad setting ends here, before binding
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"Atlas viewer: http://{shown}:{port}/viewer   API: http://{shown}:{port}/docs")
    typer.echo(f"serving {len(stores)} site(s): {', '.join(sorted(stores))}", err=True)
    run_server(spec, host=host, port=port, workers=workers, stores=stores, log_level=log_level)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())
