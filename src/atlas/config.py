"""Typed settings: the sites file and run-time options. No globals; pass a :class:`Settings`.

A ``sites.toml`` lists each data provider::

    [[site]]
    name = "amsterdam"
    country = "NL"
    store = "s3://atlas-nl/atlas"
    endpoint = "https://s3.example.org"
    region = "eu-west-1"
    key_env = "ATLAS_NL_KEY"          # names of environment variables, never the secrets
    secret_env = "ATLAS_NL_SECRET"
    connect_timeout = 3               # seconds; all limits are finite and positive
    read_timeout = 30
    operation_timeout = 66            # one operation, retries included (default 2*(3+30))

The file's path comes from ``--sites`` or ``ATLAS_SITES``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.errors import ConfigError, NotFound
from atlas.storage import Store, StoreLocation, Timeouts, parse_url
from atlas.storage.timeouts import check_seconds

DEFAULT_DATA_DIR = "./atlas-data"
SITES_ENV = "ATLAS_SITES"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SITE_KEYS = {
    "name",
    "country",
    "store",
    "endpoint",
    "region",
    "key_env",
    "secret_env",
    "anonymous",
    "connect_timeout",
    "read_timeout",
    "operation_timeout",
    "client_attempts",
}


@dataclass(frozen=True)
class Site:
    """One data provider: its name, country and the store that holds its data."""

    name: str
    country: str
    location: StoreLocation

    @property
    def url(self) -> str:
        """The store URL of this site."""
        return self.location.url

    def store(self) -> Store:
        """Open this site's store."""
        return Store(self.location)


@dataclass(frozen=True)
class Settings:
    """Run-time settings, passed explicitly to whatever needs them."""

    data_dir: str = DEFAULT_DATA_DIR
    sites: tuple[Site, ...] = field(default_factory=tuple)
    concurrency: int = 16

    def site(self, name: str) -> Site:
        """The site called ``name``; :class:`NotFound` lists the known ones."""
        for s in self.sites:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sites) or "none configured"
        raise NotFound(f"unknown site {name!r}; known sites: {known}")


def _timeouts_from_table(table: Mapping[str, Any], where: str) -> Timeouts:
    """The site's network limits: finite, positive seconds (``inf``, ``nan``, 0 are refused)."""
    defaults = Timeouts()
    values: dict[str, Any] = {}
    for key, field_name in (
        ("connect_timeout", "connect"),
        ("read_timeout", "read"),
        ("operation_timeout", "operation"),
    ):
        if key in table:
            values[field_name] = check_seconds(table[key], key, where)
    attempts = table.get("client_attempts", defaults.client_attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
        raise ConfigError(
            f"{where}: client_attempts must be an integer from 1 to 20, got {attempts!r}"
        )
    values["client_attempts"] = attempts
    return Timeouts(**values)


def _site_from_table(table: Mapping[str, Any], where: str) -> Site:
    unknown = set(table) - _SITE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_SITE_KEYS)}")
    for required in ("name", "store"):
        if not isinstance(table.get(required), str) or not table[required]:
            raise ConfigError(f"{where}: '{required}' is required and must be a string")
    name = table["name"]
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"{where}: site name {name!r} must be lower-case letters, digits, '-' or '_'"
        )
    country = str(table.get("country", ""))
    if country and not re.fullmatch(r"[A-Z]{2}", country):
        raise ConfigError(f"{where}: country {country!r} must be an ISO 3166 alpha-2 code, e.g. NL")
    if not isinstance(table.get("anonymous", False), bool):
        raise ConfigError(f"{where}: anonymous must be true or false (a TOML boolean)")
    timeouts = _timeouts_from_table(table, f"{where} (site {name!r})")
    try:
        location = parse_url(
            table["store"],
            endpoint=table.get("endpoint"),
            region=table.get("region"),
            key_env=table.get("key_env"),
            secret_env=table.get("secret_env"),
            anonymous=table.get("anonymous"),
            site=name,
            timeouts=timeouts,
        )
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return Site(name=name, country=country, location=location)


def parse_sites(text: str, source: str = "sites.toml") -> tuple[Site, ...]:
    """Parse the TOML text of a sites file."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    tables = doc.get("site", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: use [[site]] tables, one per data provider")
    sites = tuple(_site_from_table(t, f"{source} [[site]] #{i + 1}") for i, t in enumerate(tables))
    names = [s.name for s in sites]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate site name(s) {dupes}")
    return sites


def load_sites(path: str | os.PathLike[str] | None = None) -> tuple[Site, ...]:
    """Load the sites file from ``path``, else ``$ATLAS_SITES``; no file means no sites."""
    chosen = path or os.environ.get(SITES_ENV)
    if not chosen:
        return ()
    p = Path(chosen)
    if not p.is_file():
        raise ConfigError(f"sites file {p} does not exist (from --sites or ${SITES_ENV})")
    return parse_sites(p.read_text(encoding="utf-8"), source=p.name)


def load_settings(
    sites_path: str | os.PathLike[str] | None = None, data_dir: str | None = None
) -> Settings:
    """Settings from the sites file and the data directory (defaults: none, ./atlas-data)."""
    return Settings(data_dir=data_dir or DEFAULT_DATA_DIR, sites=load_sites(sites_path))
