"""Run the app on uvicorn: one process, ``--workers N`` processes, or a thread (tests, benchmarks).

With several workers uvicorn imports the app in each worker process by an import string, so
the app is built by a factory, :func:`app_from_environment`, from a :class:`ServerSpec` the
parent puts in the ``ATLAS_SERVE_SPEC`` variable of the workers it starts. The spec names
only where the settings are (a store URL and its site, or a sites file, and a ``serve.toml``),
never a credential: each worker resolves the sites' credentials the way every command does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError, ConfigError
from atlas.storage import Store

__all__ = [
    "SPEC_ENV",
    "ServerSpec",
    "app_from_environment",
    "build_app",
    "log_config",
    "run_server",
    "serve_in_thread",
]

#: the variable that carries the :class:`ServerSpec` to worker processes
SPEC_ENV = "ATLAS_SERVE_SPEC"


@dataclass(frozen=True)
class ServerSpec:
    """Where a server's settings are: one store (URL and site name) or a sites file, a config.

    Attributes
    ----------
    store, site
        One store URL and the site name it is served under (``--store``).
    sites
        A ``sites.toml`` (``--sites``), when ``store`` is not given.
    config
        A ``serve.toml``, or ``None`` for the defaults (files in ``base``).
    base
        Folder of the default key, audit and revocation files when ``config`` is ``None``.
    """

    store: str | None = None
    site: str | None = None
    sites: str | None = None
    config: str | None = None
    base: str | None = None

    def to_json(self) -> str:
        """The spec as JSON (the worker variable's value)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerSpec:
        """Read a spec written by :meth:`to_json`."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{SPEC_ENV} is not a server spec: {exc}") from None
        if not isinstance(doc, dict) or not set(doc) <= set(cls.__dataclass_fields__):
            raise ConfigError(f"{SPEC_ENV} is not a server spec")
        return cls(**{k: (None if v is None else str(v)) for k, v in doc.items()})

    def stores(self) -> dict[str, Store]:
        """The sites' stores."""
        from atlas.config import load_sites
        from atlas.storage import open_store

        if self.store is not None:
            if not self.site:
                raise ConfigError("a server spec with a store needs its site name")
            return {self.site: open_store(self.store, site=self.site)}
        configured = load_sites(self.sites)
        if not configured:
            raise ConfigError("atlas serve needs at least one site (--store or --sites)")
        return {s.name: s.store() for s in configured}


def build_app(spec: ServerSpec, stores: Mapping[str, Store] | None = None) -> Any:
    """The app of ``spec`` (its stores opened here unless given)."""
    from atlas.serve.app import create_app
    from atlas.serve.config import load_serve_config

    opened = dict(stores) if stores is not None else spec.stores()
    base = Path(spec.base) if spec.base else None
    return create_app(load_serve_config(spec.config, opened, base=base))


def app_from_environment() -> Any:
    """The app factory of worker processes (``atlas.serve.server:app_from_environment``)."""
    text = os.environ.get(SPEC_ENV)
    if not text:
        raise ConfigError(f"{SPEC_ENV} is not set: start workers with atlas serve --workers N")
    return build_app(ServerSpec.from_json(text))


def run_server(
    spec: ServerSpec,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    stores: Mapping[str, Store] | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted: in this process, or in ``workers`` worker processes."""
    import uvicorn

    common: dict[str, Any] = {
        "host": host, "port": port, "log_level": log_level, "proxy_headers": False,
        "server_header": False, "timeout_graceful_shutdown": 5, "log_config": log_config(),
    }  # fmt: skip
    if workers <= 1:
        uvicorn.run(build_app(spec, stores), **common)
        return
    # the workers this process starts read the spec (paths and names only) from their environment
    os.environ[SPEC_ENV] = spec.to_json()
    uvicorn.run("atlas.serve.server:app_from_environment", factory=True, workers=workers, **common)


def log_config() -> dict[str, Any]:
    """Uvicorn's logging set-up with tokens shortened in every line (signed URL paths)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "atlas.serve.redact.RedactTokens"}
    for handler in config.get("handlers", {}).values():
        handler.setdefault("filters", []).append("redact")
    return config


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread; yields its base URL, stops it after.

    ``port=0`` takes a free port. For tests and benchmarks on loopback.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="atlas-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise AtlasError(f"the server on {host} did not start")
        time.sleep(0.02)
    sock = server.servers[0].sockets[0]
    bound = sock.getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
