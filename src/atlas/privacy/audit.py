"""An append-only audit log in the site's store.

Each event is its own object, created with a create-if-absent write, so events are never
overwritten or reordered; listing the prefix gives them in time order. Events name subjects only
by a **keyed** fingerprint (:meth:`atlas.privacy.pseudonyms.SiteKey.audit_fingerprint`: HMAC with
the site secret over the store's URL and the pseudonym), so the log never mentions an erased
subject's pseudonym, and someone who holds a pseudonym but not the secret cannot find it in the
log.

Events written before decision 0031 carry the unkeyed form (plain SHA-256); they stay readable
as they are, and :func:`fingerprints` gives both forms so a reader can still match them.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from atlas.errors import StoreUnavailable
from atlas.privacy.pseudonyms import SiteKey, legacy_audit_fingerprint
from atlas.storage import Store

__all__ = ["AUDIT_PREFIX", "events", "fingerprint", "fingerprints", "record"]

AUDIT_PREFIX = "_audit"


def fingerprint(key: SiteKey, store: Store, subject_id: str) -> str:
    """A stable, non-reversible, keyed reference to a subject for the audit log.

    Parameters
    ----------
    key
        The site secret.
    store
        The site's store (its URL is part of the message).
    subject_id
        The subject's pseudonym.

    Returns
    -------
    str
        16 hex digits.
    """
    return key.audit_fingerprint(store.url, subject_id)


def fingerprints(key: SiteKey, store: Store, subject_id: str) -> tuple[str, str]:
    """``(keyed, legacy)``: every form under which the log may name ``subject_id``.

    The keyed form is the one written now; the legacy (unkeyed) one is that of events written
    before decision 0031, for matching only.
    """
    return fingerprint(key, store, subject_id), legacy_audit_fingerprint(store.url, subject_id)


def record(store: Store, action: str, **details: Any) -> str:
    """Append one event; returns its key.

    Raises
    ------
    StoreUnavailable
        Five create-if-absent writes in a row found their key taken (should never happen).
    """
    for _ in range(5):
        now = time.time_ns()
        key = f"{AUDIT_PREFIX}/{now:020d}-{os.urandom(4).hex()}.json"
        body = json.dumps({"time_unix_ns": now, "action": action, **details}, sort_keys=True)
        if store.put_if_absent(key, body.encode()):
            return key
    raise StoreUnavailable(  # pragma: no cover
        "could not append to the audit log", site=store.site, location=store.url
    )


def events(store: Store) -> list[dict[str, Any]]:
    """Every event, oldest first."""
    out = []
    for key in store.list(f"{AUDIT_PREFIX}/"):
        if key.endswith(".json"):
            out.append(json.loads(store.read_bytes(key)))
    return out
