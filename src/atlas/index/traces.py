"""Where a subject is still stored: the scan behind erasure's verification.

The scan looks at every object that can hold index rows, whether or not any manifest lists it:
every Parquet object under ``_index/`` (each version folder, published or not, every shard,
shards no manifest lists, a local store's build scratch) is read, every string column; every
other object under ``_index/`` (manifests, claims, DuckDB spill files) is searched byte for
byte; every key name in the store is checked (images and staging records are named after the
subject or their series); and this machine's scratch folders of the store
(:mod:`atlas.index.scratch`) are scanned the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from atlas.errors import NotFound
from atlas.index import layout, scratch
from atlas.storage import Store

#: objects read at once during a scan
SCAN_CONCURRENCY = 8


@dataclass(frozen=True)
class Trace:
    """One place that still holds (or may hold) the subject."""

    where: str  # an object key, or a local path for scratch files
    why: str  # "key name", "rows", "bytes" or "unreadable"

    def __str__(self) -> str:
        return f"{self.where} ({self.why})"


def holds(data: bytes, subject_id: str, parquet: bool) -> str | None:
    """Why ``data`` holds the subject (``"rows"``, ``"bytes"``, ``"unreadable"``) or ``None``."""
    needle = subject_id.encode()
    if not parquet:
        return "bytes" if needle in data else None
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError):
        # a torn or foreign file: it may hold the subject in a form we cannot read
        return "bytes" if needle in data else "unreadable"
    in_path = f"/{subject_id}/"
    for name in table.column_names:
        col = table[name]
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.list_flatten(col)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        if len(col) and (
            pc.any(pc.equal(col, subject_id)).as_py()
            or pc.any(pc.match_substring(col, in_path)).as_py()
        ):
            return "rows"
    return None


def names_subject(key: str, subject_id: str) -> bool:
    """Whether a key's name mentions the subject (a path part is, or starts with, the id)."""
    return any(p == subject_id or p.startswith(subject_id + ".") for p in key.split("/"))


def _scan_key(store: Store, key: str, subject_id: str) -> Trace | None:
    try:
        data = store.read_bytes(key)
    except NotFound:
        return None  # deleted while we looked
    why = holds(data, subject_id, parquet=key.endswith(".parquet"))
    return Trace(key, why) if why else None


def _scan_path(path: Path, subject_id: str) -> Trace | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    why = holds(data, subject_id, parquet=path.suffix == ".parquet")
    return Trace(str(path), why) if why else None


def scanned_keys(keys: Iterable[str]) -> list[str]:
    """The keys whose content a scan reads: every object under the index."""
    return [k for k in keys if k.startswith(f"{layout.INDEX_PREFIX}/")]


def find(
    store: Store,
    subject_id: str,
    *,
    workdir: str | None = None,
    keys: list[str] | None = None,
) -> list[Trace]:
    """Every place in ``store`` (and this machine's scratch of it) that holds the subject."""
    keys = store.list() if keys is None else keys
    traces = [Trace(k, "key name") for k in keys if names_subject(k, subject_id)]
    named = {t.where for t in traces}
    todo = [k for k in scanned_keys(keys) if k not in named]
    local = scratch.leftovers(store, workdir)
    with ThreadPoolExecutor(max_workers=SCAN_CONCURRENCY) as pool:
        found = list(pool.map(lambda k: _scan_key(store, k, subject_id), todo))
        found += list(pool.map(lambda p: _scan_path(p, subject_id), local))
    return traces + [t for t in found if t is not None]
