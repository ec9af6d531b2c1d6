"""The server's settings: :class:`ServeConfig`, from a ``serve.toml`` or built in code.

.. code-block:: toml

    [serve]
    key_file = "serve.key"        # HS256 signing key of tokens and signed URLs (0600)
    audit_log = "audit.jsonl"     # the append-only, hash-chained audit trail
    revocations = "revoked.txt"   # one revoked token id per line, re-read within 5 s
    tile_cache_mb = 256           # rendered tiles kept in memory
    render_concurrency = 4        # tiles rendered at once
    queue_depth = 64              # requests waiting for a render slot before 503
    cors_origins = ["*"]

    [serve.oidc]                  # optional: tokens of an external OpenID Connect issuer
    issuer = "https://login.example.org/realms/atlas"
    audience = "atlas"
    jwks_file = "jwks.json"
    sites_claim = "atlas_sites"
    collections_claim = "atlas_collections"
    purpose_claim = "atlas_purpose"

Relative paths are relative to the file's folder. Secrets are never in the file: the signing
key lives in its own file, created with mode 0600 when absent.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import ConfigError
from atlas.storage import Store

__all__ = ["OidcConfig", "ServeConfig", "load_serve_config", "serve_settings"]

MB = 1 << 20


@dataclass(frozen=True)
class OidcConfig:
    """An external OpenID Connect issuer whose tokens the server accepts.

    Attributes
    ----------
    issuer, audience
        The ``iss`` and ``aud`` a token must carry.
    jwks_file
        The issuer's JSON Web Key Set (its public keys), as a file.
    sites_claim, collections_claim, purpose_claim, subject_claim
        The claims mapped to the grant's sites, collections, purpose and subject.
    """

    issuer: str
    audience: str
    jwks_file: Path
    sites_claim: str = "atlas_sites"
    collections_claim: str = "atlas_collections"
    purpose_claim: str = "atlas_purpose"
    subject_claim: str = "sub"


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``atlas serve`` needs, passed in (nothing is read from global state).

    Attributes
    ----------
    stores
        The sites' stores, by site name.
    key_file
        The server's signing key (created, 32 random bytes, mode 0600, when absent).
    audit_log
        The audit trail (JSON lines, each record chained to the previous by its hash).
    revocations
        Revoked token ids, one per line (re-read at most ``revocation_poll_s`` apart).
    oidc
        An external issuer whose tokens are accepted too, or ``None``.
    tile_cache_bytes
        Bytes of rendered tiles kept in memory.
    render_concurrency
        Tiles rendered at once.
    queue_depth
        Requests that may wait for a render slot; more get ``503`` with ``Retry-After``.
    queue_wait_s
        How long a request waits for a slot before ``503``.
    cors_origins
        Origins allowed to read from a browser (``"*"``: any).
    signed_url_ttl_s
        Default lifetime of a signed URL.
    revocation_poll_s
        How often the revocation list is re-read (revocation takes effect within this).
    """

    stores: Mapping[str, Store]
    key_file: Path
    audit_log: Path
    revocations: Path
    oidc: OidcConfig | None = None
    tile_cache_bytes: int = 256 * MB
    render_concurrency: int = 4
    queue_depth: int = 64
    queue_wait_s: float = 2.0
    cors_origins: tuple[str, ...] = ("*",)
    signed_url_ttl_s: float = 600.0
    revocation_poll_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.stores:
            raise ConfigError("atlas serve needs at least one site (--store or --sites)")
        for name in ("tile_cache_bytes", "render_concurrency", "queue_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"serve {name} must be an integer >= 0, got {value!r}")
        for name in ("queue_wait_s", "signed_url_ttl_s", "revocation_poll_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"serve {name} must be a positive number, got {value!r}")
        if self.render_concurrency < 1:
            raise ConfigError("serve render_concurrency must be at least 1")


def _path(table: Mapping[str, Any], key: str, default: str, base: Path, where: str) -> Path:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a file path, got {value!r}")
    p = Path(value)
    return p if p.is_absolute() else base / p


def load_serve_config(
    path: str | Path | None, stores: Mapping[str, Store], *, base: Path | None = None
) -> ServeConfig:
    """Read ``[serve]`` from a TOML file (``None``: the defaults, files under ``base``).

    Parameters
    ----------
    path
        The ``serve.toml``; ``None`` uses the defaults.
    stores
        The sites' stores.
    base
        Folder of the default files when ``path`` is ``None`` (default: the current folder).

    Raises
    ------
    ConfigError
        The file is missing, not TOML, or a value is out of range (the message names it).
    """
    return ServeConfig(stores=dict(stores), **serve_settings(path, base=base))


def serve_settings(path: str | Path | None, *, base: Path | None = None) -> dict[str, Any]:
    """The ``[serve]`` settings of a TOML file as :class:`ServeConfig` keyword arguments.

    Everything but the stores, for commands that need the key, revocation and audit files
    without serving (``atlas token``, ``atlas audit``). Arguments and errors as
    :func:`load_serve_config`; values :class:`ServeConfig` checks are not checked here.
    """
    table: dict[str, Any] = {}
    where = "serve settings"
    folder = base or Path.cwd()
    if path is not None:
        p = Path(path)
        where = p.name
        if not p.is_file():
            raise ConfigError(f"serve config {p.name} does not exist")
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p.name} is not valid TOML: {exc}") from exc
        table = doc.get("serve", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{p.name}: [serve] must be a table")
        folder = p.parent
    known = {
        "key_file", "audit_log", "revocations", "oidc", "tile_cache_mb", "render_concurrency",
        "queue_depth", "queue_wait_s", "cors_origins", "signed_url_ttl_s", "revocation_poll_s",
    }  # fmt: skip
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown [serve] setting(s) {unknown}; known: {sorted(known)}")
    oidc = None
    if "oidc" in table:
        o = table["oidc"]
        if not isinstance(o, dict) or not {"issuer", "audience", "jwks_file"} <= set(o):
            raise ConfigError(f"{where}: [serve.oidc] needs issuer, audience and jwks_file")
        names = ("sites_claim", "collections_claim", "purpose_claim", "subject_claim")
        extra = sorted(set(o) - {"issuer", "audience", "jwks_file", *names})
        if extra:
            raise ConfigError(f"{where}: unknown [serve.oidc] setting(s) {extra}")
        claims = {k: str(o[k]) for k in names if k in o}
        oidc = OidcConfig(
            issuer=str(o["issuer"]),
            audience=str(o["audience"]),
            jwks_file=_path(o, "jwks_file", "", folder, f"{where} [serve.oidc]"),
            **claims,
        )
    origins = table.get("cors_origins", ["*"])
    if not isinstance(origins, list) or not all(isinstance(x, str) for x in origins):
        raise ConfigError(f"{where}: cors_origins must be a list of origins")
    mb = table.get("tile_cache_mb", 256)
    if isinstance(mb, bool) or not isinstance(mb, int | float) or mb < 0:
        raise ConfigError(f"{where}: tile_cache_mb must be a number >= 0, got {mb!r}")
    options: dict[str, Any] = {
        k: table[k]
        for k in ("render_concurrency", "queue_depth", "queue_wait_s", "signed_url_ttl_s",
                  "revocation_poll_s")
        if k in table
    }  # fmt: skip
    return dict(
        key_file=_path(table, "key_file", "serve.key", folder, where),
        audit_log=_path(table, "audit_log", "audit.jsonl", folder, where),
        revocations=_path(table, "revocations", "revoked.txt", folder, where),
        oidc=oidc,
        tile_cache_bytes=int(mb * MB),
        cors_origins=tuple(origins),
        **options,
    )
