"""Shared parts of the app tests: a two-site catalog, grants by bearer text, an audit list.

The authenticator and audit trail here stand in for :mod:`atlas.serve.auth` and
:mod:`atlas.serve.audit` until those are part of the build; the catalog, the stores, the
reader and the app are real.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.stream.plan_catalog import build_catalog

from atlas.errors import Unauthorized
from atlas.serve import Grant, ServeConfig, ServeContext

GRANTS = {
    "all": Grant("alice", "tok-all", "research"),
    "site-a": Grant("bob", "tok-a", "research", sites=frozenset({"a"})),
    "site-b": Grant("bea", "tok-b", "research", sites=frozenset({"b"})),
    "other-coll": Grant("carol", "tok-c", "research", collections=frozenset({"brain-mr"})),
    "commercial": Grant("eve", "tok-e", "commercial"),
}


class StaticAuth:
    """Bearer text -> grant (``Bearer all`` is the grant ``GRANTS["all"]``)."""

    def authenticate(self, authorization: str | None, signed_token: str | None) -> Grant:
        if not authorization:
            raise Unauthorized("no token: send Authorization: Bearer <token>")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or value not in GRANTS:
            raise Unauthorized("token not accepted")
        return GRANTS[value]


@dataclass
class ListAudit:
    """Audit records kept in a list."""

    records: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, **fields: Any) -> dict[str, Any]:
        with self.lock:
            self.records.append(fields)
        return fields


def h(name: str) -> dict[str, str]:
    """The Authorization header of grant ``name``."""
    return {"Authorization": f"Bearer {name}"}


def make_context(tmp: Path, **options: Any) -> tuple[ServeContext, Any]:
    """A context on a fresh two-site catalog (sites a and b, one subject each)."""
    catalog = build_catalog(tmp, {"a": 1, "b": 1})
    cfg = ServeConfig(
        stores=catalog.stores, key_file=tmp / "serve.key", audit_log=tmp / "audit.jsonl",
        revocations=tmp / "revoked.txt", **options,
    )  # fmt: skip
    return ServeContext(cfg), catalog


class GreyRenderer:
    """Stands in for atlas.serve.render: a grey PNG, optionally after a delay."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, reader: Any, entry: Any, params: Any) -> bytes:
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
            return buf.getvalue()
        finally:
            with self.lock:
                self.active -= 1


class DictCache:
    """Stands in for atlas.serve.tile_cache.TileCache."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.items[key] = value
