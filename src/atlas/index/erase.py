"""Erasure (GDPR Art. 17): remove every byte of one subject from a site.

Order matters, so that no index ever points at deleted pixels and an interrupted erasure can
simply be run again:

1. publish a new index version without the subject (compare-and-swap, like a build);
2. amend every older version that still lists the subject: its affected shard objects are
   rewritten without the subject's rows, manifests updated, the old objects deleted;
3. remove every other index object that holds the subject: shards no manifest lists (left by
   an erasure interrupted after step 2 rewrote the manifests), unpublished versions of builds
   that are no longer running (:mod:`atlas.index.gc`) and build scratch files;
4. delete the subject's images (every collection), staging records, journal entries and
   consent entry;
5. fence: swing ``_index/CURRENT`` once more, so that a build that read the staging records
   before step 4 can no longer publish them;
6. verify by scanning every object under the index, published or not, every key name (images
   and staging records are named after the subject or its series) and this machine's scratch
   folders of the store (:mod:`atlas.index.traces`);
7. record the erasure in the append-only audit log (by keyed fingerprint, not by pseudonym:
   :mod:`atlas.privacy.audit`).

Every step is idempotent; a run killed at any point is completed by running it again. Erasing
a subject of whom nothing is stored raises :class:`~atlas.errors.NotFound`, except that an
erasure which had finished everything but its audit record is completed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.errors import AtlasError, InvalidInput, NotFound
from atlas.index import gc, layout, scratch, traces
from atlas.index.build import abandon, require_store
from atlas.index.lease import DEFAULT_TTL_S, Lease, acquire, claim, read_lease
from atlas.index.publish import (
    ConcurrentBuild,
    load_manifest,
    publish,
    read_current,
    swap_current,
    write_manifest,
)
from atlas.privacy import audit, consent
from atlas.privacy.pseudonyms import SiteKey
from atlas.records import STAGING_PREFIX
from atlas.records.journal import JOURNAL_PREFIX
from atlas.storage import Store

#: held while an erasure runs: erasures of one site run one at a time (step 3 deletes index
#: objects no manifest lists, which another erasure may have written a moment before listing)
ERASURE_LOCK = f"{layout.INDEX_PREFIX}/ERASING"


class ErasureIncomplete(AtlasError):
    """Verification found the subject still mentioned somewhere; rerun the erasure."""


class ConcurrentErasure(AtlasError):
    """Another erasure is running at this site; run this one when it has finished."""


@dataclass
class ErasureReport:
    """What an erasure removed (counts only; the subject appears as a fingerprint)."""

    fingerprint: str
    objects_deleted: int = 0
    index_rows_removed: int = 0
    versions_amended: list[str] = field(default_factory=list)
    unpublished_removed: list[str] = field(default_factory=list)
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
        manifest.setdefault("amended_by_erasure", []).append(report.fingerprint)
        digest = write_manifest(store, version, manifest)
        report.versions_amended.append(version)
        if pointer and pointer["version"] == version:
            new_pointer = {"version": version, "manifest_sha256": digest}
            if not swap_current(store, new_pointer, token):
                raise ConcurrentBuild("the index changed during erasure; run the erasure again")
    _delete_replaced(store, list(replaced), report)


def _delete_replaced(store: Store, keys: list[str], report: ErasureReport) -> None:
    """The last part of step 2: the shard objects the manifests no longer list."""
    store.delete_many(keys)
    report.objects_deleted += len(keys)


def _sweep_index(store: Store, subject_id: str, report: ErasureReport, workdir: str | None) -> None:
    """Step 3: index objects that hold the subject although no manifest lists them."""
    manifests = {v: load_manifest(store, v) for v in _versions(store)}
    listed = {
        e["key"]
        for m in manifests.values()
        for t in layout.TABLES
        for e in m["tables"][t]["shards"]
        if e.get("key")
    }
    live: dict[str, bool] = {}

    def is_live(version: str) -> bool:
        if version not in live:
            lease, _ = read_lease(store, version)
            live[version] = lease is not None and lease.live()
        return live[version]

    # a dead build's scratch folder inside a version folder goes whole
    orphans = [
        k for v, keys in gc.folders(store).items() if not is_live(v)
        for k in keys if k.startswith(f"{layout.version_prefix(v)}/{scratch.SCRATCH_NAME}/")
    ]  # fmt: skip
    dead_unpublished: set[str] = set()
    unlisted = [
        k for k in store.list(f"{layout.INDEX_PREFIX}/versions/")
        if k not in listed and not k.endswith(("/manifest.json", "/CLAIM"))
    ]  # fmt: skip
    for trace in traces.find(store, subject_id, workdir=workdir, keys=unlisted):
        key = trace.where
        if not key.startswith(f"{layout.INDEX_PREFIX}/versions/"):
            continue  # this machine's scratch folders are swept below
        version = key.split("/")[2]
        if is_live(version):
            continue  # a running build's: it cannot publish after the fence; verify reports it
        if version not in manifests:
            dead_unpublished.add(version)
        elif key not in orphans:
            orphans.append(key)
    if dead_unpublished:
        collected = gc.collect_garbage(store, workdir=workdir, only=lambda v: v in dead_unpublished)
        report.unpublished_removed += collected.removed
        report.objects_deleted += collected.objects_deleted
    store.delete_many(orphans)
    report.objects_deleted += len(orphans)
    scratch.sweep(store, workdir)


def _fence(store: Store) -> None:
    """Step 5: change ``_index/CURRENT`` (same version) so stale builds fail to publish."""
    for _ in range(5):
        pointer, token = read_current(store)
        if pointer is None:
            return
        pointer["fence"] = uuid.uuid4().hex
        if swap_current(store, pointer, token):
            return
    raise ConcurrentBuild("the index kept changing during erasure; run the erasure again")


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
        lease = claim(store, pointer)
        version = lease.version
        new_manifest = json.loads(json.dumps(manifest))
        new_manifest.update(version=version, parent=pointer["version"],
                            created_unix=int(time.time()))  # fmt: skip
        new_manifest.pop("amended_by_erasure", None)
        try:
            with lease:
                for table, (data, removed) in filtered.items():
                    entry = new_manifest["tables"][table]["shards"][shard]
                    key = layout.shard_key(version, table, shard, n)
                    store.write_bytes(key, data)
                    entry.update(key=key, sha256=hashlib.sha256(data).hexdigest(),
                                 bytes=len(data))  # fmt: skip
                    entry["rows"] = int(entry["rows"]) - removed
                    new_manifest["tables"][table]["rows"] -= removed
                lease.renew()
                publish(store, new_manifest, token)
        except ConcurrentBuild:
            abandon(store, lease)
            continue
        except BaseException:
            abandon(store, lease)
            raise
        lease.end("published")
        report.new_version = version
        return
    raise ConcurrentBuild("the index kept changing during erasure; run the erasure again")


def _subject_keys(store: Store, subject_id: str, listing: list[str] | None = None) -> list[str]:
    """Every object key that belongs to the subject (images, staging, journal, consent)."""
    import pyarrow.parquet as pq

    series: set[str] = set()
    keys: list[str] = []

    def series_of(key: str) -> set[str]:
        try:
            table = pq.read_table(
                io.BytesIO(store.read_bytes(key)), columns=["subject_id", "series_id"]
            )
        except NotFound:
            return set()
        return {r["series_id"] for r in table.to_pylist() if r["subject_id"] == subject_id}

    staged = [k for k in store.list(f"{STAGING_PREFIX}/series/") if k.endswith(".parquet")]
    with ThreadPoolExecutor(max_workers=traces.SCAN_CONCURRENCY) as pool:
        for found in pool.map(series_of, staged):
            series |= found
    for key in store.list() if listing is None else listing:
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


def verify_erased(store: Store, subject_id: str, workdir: str | None = None) -> list[str]:
    """Every place that still holds the subject (empty when erasure is complete).

    Scans every object under the index (each version folder, published or not, every shard,
    scratch files), every key name and this machine's scratch folders of the store; see
    :mod:`atlas.index.traces`.
    """
    return [str(t) for t in traces.find(store, subject_id, workdir=workdir)]


def _indexed(store: Store, subject_id: str, listing: list[str], workdir: str | None) -> bool:
    """Whether any index object holds the subject.

    Its shard of the current version first (one object per table), else a scan of everything
    (e.g. only an unpublished build has it).
    """
    pointer, _ = read_current(store)
    if pointer is not None:
        manifest = load_manifest(store, pointer["version"], pointer.get("manifest_sha256"))
        shard = layout.shard_of(subject_id, int(manifest["n_shards"]))
        for table in layout.TABLES:
            key = manifest["tables"][table]["shards"][shard].get("key")
            if key and traces.holds(store.read_bytes(key), subject_id, parquet=True):
                return True
    return bool(traces.find(store, subject_id, workdir=workdir, keys=listing))


def _unfinished(events: list[dict[str, Any]], fps: tuple[str, ...]) -> bool:
    """Whether the audit log has an erasure of the subject that started and never finished.

    The subject is named by any of ``fps`` (keyed or legacy fingerprints).
    """
    state = False
    for event in events:
        if event.get("subject") in fps:
            if event["action"] == "erase-start":
                state = True
            elif event["action"] == "erase-done":
                state = False
    return state


def _not_found(store: Store, fps: tuple[str, ...], events: list[dict[str, Any]]) -> NotFound:
    fp = fps[0]
    done = [e for e in events if e.get("subject") in fps and e["action"] == "erase-done"]
    before = ""
    if done:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(done[-1]["time_unix_ns"] / 1e9))
        before = f"; the audit log records its erasure at {when}"
    return NotFound(
        f"nothing of subject {fp} (fingerprint) is stored at {store.url}: nothing was erased"
        f"{before}. Check the pseudonym (or the --patient-id and the site secret)",
        site=store.site,
        location=store.url,
    )


def erase_subject(
    store: Store, subject_id: str, workdir: str | None = None, *, key: SiteKey
) -> ErasureReport:
    """Erase one subject (by pseudonym) from the site; see the module docstring.

    Parameters
    ----------
    store
        The site's store.
    subject_id
        The subject's pseudonym (:meth:`atlas.privacy.SiteKey.subject_id` of the original id).
    workdir
        Where this machine's index builds keep their scratch files (default: the usual place).
    key
        The site secret: the audit log names the subject by its keyed fingerprint.

    Raises
    ------
    NotFound
        The store does not exist, or nothing of the subject is stored there.
    ErasureIncomplete
        Verification still found the subject (e.g. in a running build's files); run again.
    ConcurrentErasure
        Another erasure of this site is running.
    """
    if not subject_id or "/" in subject_id or subject_id.startswith("."):
        raise InvalidInput("give the subject's pseudonymous id")
    require_store(store)
    t0 = time.perf_counter()
    fps = audit.fingerprints(key, store, subject_id)  # keyed; legacy: events before 0031
    report = ErasureReport(fingerprint=fps[0])
    listing = store.list()
    keys = _subject_keys(store, subject_id, listing)
    present = bool(keys) or _indexed(store, subject_id, listing, workdir)
    if not present:
        events = audit.events(store)
        if not _unfinished(events, fps):
            raise _not_found(store, fps, events)
    lock = acquire(store, ERASURE_LOCK, "erasure")
    if lock is None:
        raise ConcurrentErasure(
            f"another erasure is running at {store.url}; run this one when it has finished "
            f"(its lock {ERASURE_LOCK} expires {int(DEFAULT_TTL_S)} s after its last heartbeat)",
            site=store.site,
            location=store.url,
        )
    with lock:
        try:
            return _erase(store, subject_id, report, keys, present, workdir, t0, lock)
        finally:
            lock.end("released")


def _erase(
    store: Store,
    subject_id: str,
    report: ErasureReport,
    keys: list[str],
    present: bool,
    workdir: str | None,
    t0: float,
    lock: Lease,
) -> ErasureReport:
    """Steps 1-7, under the site's erasure lock.

    ``present``: something of the subject is stored; otherwise this completes an erasure that
    only missed its audit record.
    """
    fp = report.fingerprint
    if present:
        audit.record(store, "erase-start", subject=fp)
    _publish_without(store, subject_id, report)
    _amend_manifests(store, subject_id, report)
    lock.renew()  # LeaseLost if this run stalled and another erasure took the lock meanwhile
    _sweep_index(store, subject_id, report, workdir)
    store.delete_many(keys)
    report.objects_deleted += len(keys)
    for top in sorted({key.split("/")[0] for key in keys}):
        store.prune_empty_dirs(top)
    _fence(store)
    left = traces.find(store, subject_id, workdir=workdir)
    if left:
        running = sum(1 for t in left if _in_live_build(store, t.where, workdir))
        hint = (
            f" ({running} in the files of an index build that is still running: it can no "
            "longer publish them; rerun the erasure when it has ended)"
            if running
            else ""
        )
        audit.record(store, "erase-incomplete", subject=fp, remaining=len(left))
        raise ErasureIncomplete(
            f"erasure of subject {fp} (fingerprint) is incomplete: {len(left)} place(s) still "
            f"hold it{hint}; run the erasure again",
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
        unpublished_removed=report.unpublished_removed,
        new_version=report.new_version,
    )
    return report


def _in_live_build(store: Store, where: str, workdir: str | None) -> bool:
    """Whether a trace lies in the files of a build that is still running."""
    if where.startswith(f"{layout.INDEX_PREFIX}/versions/"):
        lease, _ = read_lease(store, where.split("/")[2])
        return lease is not None and lease.live()
    root = scratch.local_root(store, workdir)
    try:
        name = Path(where).relative_to(root).parts[0]
    except (ValueError, IndexError):
        return False
    return scratch.live(store, name)
