"""The ingest journal: one small object per finished series, written last.

A series is finished when its images are complete (their commit markers are written), its
staging records are written, and then its journal entry is written. A rerun of the same command
skips series that have an entry, so ingest is idempotent and resumes after any crash: a series
killed half-way has no entry and is redone from scratch (its leftovers are replaced). Entries
hold only pseudonymous ids and counts.
"""

from __future__ import annotations

import json
from typing import Any

from atlas.errors import NotFound
from atlas.storage import Store

JOURNAL_PREFIX = "_journal"


def journal_key(collection: str, series_id: str) -> str:
    """The journal entry of one series."""
    return f"{JOURNAL_PREFIX}/{collection}/{series_id}.json"


def read_entry(store: Store, collection: str, series_id: str) -> dict[str, Any] | None:
    """The journal entry, or ``None``."""
    try:
        data: dict[str, Any] = json.loads(store.read_bytes(journal_key(collection, series_id)))
    except NotFound:
        return None
    return data


def mark_done(store: Store, collection: str, series_id: str, entry: dict[str, Any]) -> None:
    """Record that the series is finished (the last write of a series)."""
    store.write_bytes(
        journal_key(collection, series_id), json.dumps(entry, sort_keys=True).encode()
    )


def finished(store: Store, collection: str) -> list[str]:
    """Pseudonymous ids of every finished series of ``collection``."""
    prefix = f"{JOURNAL_PREFIX}/{collection}/"
    return [k[len(prefix) : -len(".json")] for k in store.list(prefix) if k.endswith(".json")]
