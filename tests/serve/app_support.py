"""Shared parts of the app tests: a two-site catalog, real tokens for a set of grants.

The catalog, stores, reader, tokens (:class:`atlas.serve.tokens.TokenIssuer`), authenticator
and audit trail are the real ones. A renderer that stands in for :mod:`atlas.serve.render`
(a grey PNG after an optional delay) lets the limiter tests control render time.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.stream.plan_catalog import build_catalog

from atlas.serve import ServeConfig, ServeContext
from atlas.serve.audit import AuditTrail
from atlas.serve.auth import Authenticator
from atlas.serve.render import RenderedTile, tile_etag
from atlas.serve.tokens import TokenIssuer

#: name -> (subject, purpose, sites, collections) of the tokens the tests use
GRANTS: dict[str, tuple[str, str, list[str] | None, list[str] | None]] = {
    "all": ("alice", "research", None, None),
    "site-a": ("bob", "research", ["a"], None),
    "site-b": ("bea", "research", ["b"], None),
    "other-coll": ("carol", "research", None, ["brain-mr"]),
    "commercial": ("eve", "commercial", None, None),
}


@dataclass
class Served:
    """A context, its authenticator and audit trail, and a bearer token per grant name."""

    ctx: ServeContext
    auth: Authenticator
    audit: AuditTrail
    tokens: dict[str, str]
    catalog: Any

    def h(self, name: str) -> dict[str, str]:
        """The Authorization header of grant ``name``."""
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def make_served(tmp: Path, **options: Any) -> Served:
    """A context on a fresh two-site catalog (sites a and b, one subject each), with tokens."""
    catalog = build_catalog(tmp, {"a": 1, "b": 1})
    cfg = ServeConfig(
        stores=catalog.stores, key_file=tmp / "serve.key", audit_log=tmp / "audit.jsonl",
        revocations=tmp / "revoked.txt", **options,
    )  # fmt: skip
    auth = Authenticator(cfg)
    issuer = TokenIssuer(auth.key)
    tokens = {
        name: issuer.create(subject, purpose=purpose, sites=sites, collections=colls,
                            token_id=f"tok-{name}")
        for name, (subject, purpose, sites, colls) in GRANTS.items()
    }  # fmt: skip
    return Served(ServeContext(cfg), auth, AuditTrail(cfg.audit_log, auth.key), tokens, catalog)


class GreyRenderer:
    """Stands in for atlas.serve.render in the limiter tests: a grey PNG after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, reader: Any, entry: Any, spec: Any) -> RenderedTile:
        from PIL import Image

        with self.lock:
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            buf = io.BytesIO()
            Image.new("L", (8, 8), 128).save(buf, format="PNG")
            return RenderedTile(buf.getvalue(), "image/png", tile_etag(reader, entry, spec))
        finally:
            with self.lock:
                self.active -= 1
