"""Erasure (GDPR Art. 17): remove every byte of one subject from a site.

Order matters, so that no index ever points at deleted pixels and an interrupted erasure can
simply be run again:

1. publish a new index version without the subject (compare-and-swap, like a build);
2. amend every older version that still lists the subject: its affected shard objects are
   rewritten without the subject's rows, manifests updated, the old objects deleted;
3. delete the subject's images (every collection), staging records, journal entries and
   consent entry;
4. verify: no object key and no index version mentions the subject any more;
5. record the erasure in the append-only audit log (by fingerprint, not by pseudonym).

Every step is idempotent; a run killed at any point is completed by running it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from atlas.errors import AtlasError, InvalidInput, NotFound
from atlas.index import audit, consent, layout
from atlas.index.build import (
    ConcurrentBuild,
    claim_version,
    load_manifest,
    publish,
    read_current,
)
from atlas.ingest.journal import JOURNAL_PREFIX
from atlas.ingest.records import STAGING_PREFIX
from atlas.storage import Store


class ErasureIncomplete(AtlasError):
    """Verification found the subject still mentioned somewhere; rerun the erasure."""


@dataclass
class ErasureReport:
    """What an erasure removed (counts only; the subject appears as a fingerprint)."""

    fingerprint: str
    objects_deleted: int = 0
    index_rows_removed: int = 0
    versions_amended: list[str] = field(default_factory=list)
    new_version: str | None = None
    seconds: float = 0.0


def _without_subject(data: bytes, subject_id: str) -> tuple[bytes, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    keep = pc.invert(pc.equal(table["subject_id"], pa.scalar(subject_id)))
    kept = table.filter(keep)
    removed = table.num_rows - kept.num_rows
    if removed == 0:
        return data, 0
    buf = io.BytesIO()
    pq.write_table(kept, buf, compression="zstd", row_group_size=65_536)
    return buf.getvalue(), removed


def _versions(store: Store) -> list[str]:
    names = {
        k.split("/")[2]
        for k in store.list(f"{layout.INDEX_PREFIX}/versions/")
        if k.endswith("/manifest.json")
    }
    return sorted(names)


def _amend_manifests(store: Store, subject_id: str, report: ErasureReport) -> None:
    """Rewrite every shard object (of any version) that holds the subject's rows."""
    manifests = {v: load_manifest(store, v) for v in _versions(store)}
    replaced: dict[str, dict[str, Any]] = {}  # old key -> new entry
    for _version, manifest in sorted(manifests.items()):
        n = int(manifest["n_shards"])
        shard = layout.shard_of(subject_id, n)
        for table in layout.TABLES:
            entry = manifest["tables"][table]["shards"][shard]
            key = entry.get("key")
            if not key or key in replaced:
                continue
            try:
                data = store.read_bytes(key)
            except NotFound:
                continue
            new_data, removed = _without_subject(data, subject_id)
            if not removed:
                continue
            digest = hashlib.sha256(new_data).hexdigest()
            new_key = (
                key.rsplit(".parquet", 1)[0].split(".amended-")[0]
                + f".amended-{digest[:12]}.parquet"
            )
            store.write_bytes(new_key, new_data)
            replaced[key] = {"key": new_key, "sha256": digest, "bytes": len(new_data),
                             "removed": removed}  # fmt: skip
            report.index_rows_removed += removed
    if not replaced:
        return
    pointer, token = read_current(store)
    for version, manifest in manifests.items():
        changed = False
        for table in layout.TABLES:
            for entry in manifest["tables"][table]["shards"]:
                new = replaced.get(entry.get("key") or "")
                if new:
                    entry.update(key=new["key"], sha256=new["sha256"], bytes=new["bytes"])
                    entry["rows"] = int(entry["rows"]) - int(new["removed"])
                    manifest["tables"][table]["rows"] -= int(new["removed"])
                    changed = True
        if not changed:
            continue
        manifest.setdefault("amended_by_erasure", []).append(audit.fingerprint(store, subject_id))
        body = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
        store.write_bytes(layout.manifest_key(version), body)
        report.versions_amended.append(version)
        if pointer and pointer["version"] == version:
            new_pointer = {"version": version, "manifest_sha256": hashlib.sha256(body).hexdigest()}
            if not store.put_if_match(
                layout.CURRENT_KEY, json.dumps(new_pointer, sort_keys=True).encode(), token
            ):
                raise ConcurrentBuild("the index changed during erasure; run the erasure again")
    for old_key in replaced:
        store.delete(old_key)
        report.objects_deleted += 1


def _publish_without(store: Store, subject_id: str, report: ErasureReport) -> None:
    """Step 1: a new current version whose shards no longer hold the subject."""
    for _ in range(5):
        pointer, token = read_current(store)
        if pointer is None:
            return
        manifest = load_manifest(store, pointer["version"], pointer.get("manifest_sha256"))
        n = int(manifest["n_shards"])
        shard = layout.shard_of(subject_id, n)
        filtered = {
            table: _without_subject(store.read_bytes(entry["key"]), subject_id)
            for table in layout.TABLES
            if (entry := manifest["tables"][table]["shards"][shard]).get("key")
        }
        if not any(removed for _, removed in filtered.values()):
            return
        version = claim_version(store, pointer)
        new_manifest = json.loads(json.dumps(manifest))
        new_manifest.update(version=version, parent=pointer["version"],
                            created_unix=int(time.time()))  # fmt: skip
        new_manifest.pop("amended_by_erasure", None)
        for table, (data, removed) in filtered.items():
            entry = new_manifest["tables"][table]["shards"][shard]
            key = layout.shard_key(version, table, shard, n)
            store.write_bytes(key, data)
            entry.update(key=key, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
            entry["rows"] = int(entry["rows"]) - removed
            new_manifest["tables"][table]["rows"] -= removed
        try:
            publish(store, new_manifest, token)
        except ConcurrentBuild:
            continue
        report.new_version = version
        return
    raise ConcurrentBuild("the index kept changing during erasure; run the erasure again")


def _subject_keys(store: Store, subject_id: str) -> list[str]:
    """Every object key that belongs to the subject (images, staging, journal, consent)."""
    import pyarrow.parquet as pq

    series: set[str] = set()
    keys: list[str] = []
    for key in store.list(f"{STAGING_PREFIX}/series/"):
        if not key.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(
                io.BytesIO(store.read_bytes(key)), columns=["subject_id", "series_id"]
            )
        except NotFound:
            continue
        rows = [r for r in table.to_pylist() if r["subject_id"] == subject_id]
        if rows:
            series.update(r["series_id"] for r in rows)
    for key in store.list():
        parts = key.split("/")
        if len(parts) > 2 and parts[1] == subject_id and not key.startswith("_"):
            keys.append(key)  # <collection>/<subject>/...
        elif key.startswith((f"{STAGING_PREFIX}/", f"{JOURNAL_PREFIX}/")):
            stem = parts[-1].rsplit(".", 1)[0]
            if stem in series:
                keys.append(key)
        elif key == f"{consent.CONSENT_PREFIX}/subjects/{subject_id}.json":
            keys.append(key)
    return keys


def verify_erased(store: Store, subject_id: str) -> list[str]:
    """Where the subject is still mentioned (empty when erasure is complete)."""
    import pyarrow.parquet as pq

    problems = [k for k in store.list() if subject_id in k]
    for version in _versions(store):
        manifest = load_manifest(store, version)
        shard = layout.shard_of(subject_id, int(manifest["n_shards"]))
        for table in layout.TABLES:
            entry = manifest["tables"][table]["shards"][shard]
            if not entry.get("key"):
                continue
            ids = pq.read_table(io.BytesIO(store.read_bytes(entry["key"])), columns=["subject_id"])
            if subject_id in set(ids["subject_id"].to_pylist()):
                problems.append(f"index {version} {table} shard {shard}")
    return problems


def erase_subject(store: Store, subject_id: str) -> ErasureReport:
    """Erase one subject (by pseudonym) from the site; see the module docstring."""
    if not subject_id or "/" in subject_id or subject_id.startswith("."):
        raise InvalidInput("give the subject's pseudonymous id")
    t0 = time.perf_counter()
    fp = audit.fingerprint(store, subject_id)
    report = ErasureReport(fingerprint=fp)
    audit.record(store, "erase-start", subject=fp)
    _publish_without(store, subject_id, report)
    _amend_manifests(store, subject_id, report)
    keys = _subject_keys(store, subject_id)
    store.delete_many(keys)
    report.objects_deleted += len(keys)
    if store.location.scheme == "file":
        from atlas.storage.store import prune_empty_dirs

        for top in sorted({key.split("/")[0] for key in keys}):
            prune_empty_dirs(str(store.location.child(top).root))
    left = verify_erased(store, subject_id)
    if left:
        audit.record(store, "erase-incomplete", subject=fp, remaining=len(left))
        raise ErasureIncomplete(
            f"erasure of subject {fp} (fingerprint) is incomplete: {len(left)} place(s) still "
            "mention it; run the erasure again",
            site=store.site,
            location=store.url,
        )
    report.seconds = time.perf_counter() - t0
    audit.record(
        store,
        "erase-done",
        subject=fp,
        objects_deleted=report.objects_deleted,
        index_rows_removed=report.index_rows_removed,
        versions_amended=report.versions_amended,
        new_version=report.new_version,
    )
    return report
