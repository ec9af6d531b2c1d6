"""An append-only audit log in the site's store.

Each event is its own object, created with a create-if-absent write, so events are never
overwritten or reordered; listing the prefix gives them in time order. Events name subjects only
by a keyed fingerprint (the first 16 hex digits of SHA-256 over the site's store URL and the
pseudonym), so the log itself never mentions an erased subject's pseudonym.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from atlas.storage import Store

AUDIT_PREFIX = "_audit"


def fingerprint(store: Store, subject_id: str) -> str:
    """A stable, non-reversible reference to a subject for the audit log."""
    return hashlib.sha256(f"{store.url}|{subject_id}".encode()).hexdigest()[:16]


def record(store: Store, action: str, **details: Any) -> str:
    """Append one event; returns its key."""
    for _ in range(5):
        now = time.time_ns()
        key = f"{AUDIT_PREFIX}/{now:020d}-{os.urandom(4).hex()}.json"
        body = json.dumps({"time_unix_ns": now, "action": action, **details}, sort_keys=True)
        if store.put_if_absent(key, body.encode()):
            return key
    raise RuntimeError("could not append to the audit log")  # pragma: no cover


def events(store: Store) -> list[dict[str, Any]]:
    """Every event, oldest first."""
    out = []
    for key in store.list(f"{AUDIT_PREFIX}/"):
        if key.endswith(".json"):
            out.append(json.loads(store.read_bytes(key)))
    return out
