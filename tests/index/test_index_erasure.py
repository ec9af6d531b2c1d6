"""Erasure covers every object that holds a subject; unpublished versions and garbage collection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import atlas.index.build as build_mod
import atlas.index.erase as erase_mod
from atlas import records
from atlas.errors import NotFound
from atlas.index import layout
from atlas.index.build import build_index
from atlas.index.catalog import open_atlas
from atlas.index.erase import erase_subject, verify_erased
from atlas.index.gc import collect_garbage, folders
from atlas.index.lease import LeaseLost, claim, read_lease
from atlas.index.publish import load_manifest, read_current
from atlas.index.release import create_release, load_release
from atlas.privacy import audit, consent
from atlas.privacy.pseudonyms import SiteKey
from atlas.storage import Store, open_store
from atlas.testing.records import generate_site

SRC = str(Path(__file__).resolve().parents[2] / "src")

#: the site secret of the test sites (the audit log names subjects by keyed fingerprint)
KEY = SiteKey(b"test-site-secret-for-erasure-0123")


def _site(root: Path | str, n_subjects: int = 8) -> Store:
    store = open_store(root, site="a")
    gen = generate_site(store, "a", n_subjects=n_subjects, seed=3)
    for c in gen.collections:
        consent.set_collection_default(store, c, ["research"])
    return store


def _subjects(store: Store) -> list[str]:
    return sorted({r["subject_id"] for r in records.read_table(store, "series").to_pylist()})


def _unlisted_parquet(store: Store) -> list[str]:
    """Index Parquet objects no manifest lists."""
    listed = set()
    for version, keys in folders(store).items():
        if layout.manifest_key(version) in keys:
            m = load_manifest(store, version)
            listed |= {e["key"] for t in layout.TABLES for e in m["tables"][t]["shards"]}
    return [
        k for k in store.list(f"{layout.INDEX_PREFIX}/")
        if k.endswith(".parquet") and k not in listed
    ]  # fmt: skip


KILLED_BUILD = textwrap.dedent(
    """
    import sys, time
    import atlas.index.build as b
    from atlas.storage import open_store

    def stall(*args, **kwargs):   # every shard is written; the manifest is not
        print("ready", flush=True)
        time.sleep(600)

    b.publish = stall
    b.build_index(open_store(sys.argv[1], site="a"), n_shards=2, lease_s=1.0)
    """
)


def test_build_killed_before_publish_is_found_and_erased(tmp_path) -> None:
    store = _site(tmp_path / "site")
    build_index(store, n_shards=2)
    victim = _subjects(store)[0]
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(system_tmp), "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path / "site")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # the killed build left a claimed, unpublished version holding the subject's rows ...
    unpublished = sorted(folders(store))[-1]
    assert read_current(store)[0]["version"] != unpublished
    assert not store.exists(layout.manifest_key(unpublished))
    found = verify_erased(store, victim)
    assert any(unpublished in place and "(rows)" in place for place in found), found
    # ... and nothing outside the store: its scratch lived inside the version folder
    assert list(system_tmp.rglob("*")) == []
    time.sleep(1.1)  # its lease (1 s) expires: nobody is building any more
    report = erase_subject(store, victim, key=KEY)
    assert report.unpublished_removed == [unpublished]
    assert verify_erased(store, victim) == []
    assert [k for k in folders(store).get(unpublished, [])] == [
        f"{layout.version_prefix(unpublished)}/CLAIM"
    ]
    lease, _ = read_lease(store, unpublished)
    assert lease is not None and lease.state == "collected"
    assert open_atlas({"a": store}, purpose="research").images.count().value > 0


def test_erasure_interrupted_before_old_shards_are_deleted(tmp_path, monkeypatch) -> None:
    store = _site(tmp_path / "site")
    build_index(store, n_shards=2)
    build_index(store, n_shards=2)
    victim = _subjects(store)[1]

    def power_cut(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(erase_mod, "_delete_replaced", power_cut)
    with pytest.raises(KeyboardInterrupt):
        erase_subject(store, victim, key=KEY)
    monkeypatch.undo()
    # manifests were rewritten; the old shard objects are orphans that still hold the subject
    orphans = _unlisted_parquet(store)
    assert orphans
    found = verify_erased(store, victim)
    assert {o for o in orphans} <= {p.split(" ")[0] for p in found}
    erase_subject(store, victim, key=KEY)
    assert verify_erased(store, victim) == []
    assert _unlisted_parquet(store) == []


def test_erasure_that_only_missed_its_audit_record_is_completed(tmp_path, monkeypatch) -> None:
    store = _site(tmp_path / "site", n_subjects=4)
    build_index(store)
    victim = _subjects(store)[0]
    real = audit.record

    def lose_done(st, action, **details):
        if action == "erase-done":
            raise KeyboardInterrupt("killed before the audit record")
        return real(st, action, **details)

    monkeypatch.setattr(erase_mod.audit, "record", lose_done)
    with pytest.raises(KeyboardInterrupt):
        erase_subject(store, victim, key=KEY)
    monkeypatch.undo()
    erase_subject(store, victim, key=KEY)  # nothing left to delete, but the erasure is finished
    assert [e["action"] for e in audit.events(store)][-2:] == ["erase-start", "erase-done"]
    with pytest.raises(NotFound, match="nothing of subject"):
        erase_subject(store, victim, key=KEY)
    with pytest.raises(NotFound, match="nothing of subject"):
        erase_subject(store, "no-such-subject-anywhere", key=KEY)
    assert sum(e["action"] == "erase-start" for e in audit.events(store)) == 1


def test_erasure_started_before_keyed_fingerprints_is_completed(tmp_path, monkeypatch) -> None:
    """An audit log written before decision 0031 (unkeyed fingerprints) is still understood."""
    from atlas.privacy.pseudonyms import legacy_audit_fingerprint

    store = _site(tmp_path / "site", n_subjects=4)
    build_index(store)
    victim = _subjects(store)[0]
    real = audit.record
    legacy = legacy_audit_fingerprint(store.url, victim)

    def as_before(st, action, **details):  # what an older version wrote, then killed
        if action == "erase-done":
            raise KeyboardInterrupt("killed before the audit record")
        return real(st, action, **{**details, "subject": legacy})

    monkeypatch.setattr(erase_mod.audit, "record", as_before)
    with pytest.raises(KeyboardInterrupt):
        erase_subject(store, victim, key=KEY)
    monkeypatch.undo()
    assert [e["subject"] for e in audit.events(store)] == [legacy]
    report = erase_subject(store, victim, key=KEY)  # nothing left, but the erasure is finished
    done = audit.events(store)[-1]
    assert done["action"] == "erase-done" and done["subject"] == report.fingerprint
    assert report.fingerprint == audit.fingerprint(KEY, store, victim) != legacy
    with pytest.raises(NotFound, match="the audit log records its erasure"):
        erase_subject(store, victim, key=KEY)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_failed_build_leaves_no_scratch_and_no_shards(tmp_path, monkeypatch, scheme) -> None:
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(system_tmp))
    root = tmp_path / "site" if scheme == "file" else f"memory://failed-build-{os.getpid()}"
    store = _site(root, n_subjects=4)
    build_index(store, n_shards=2)
    before = set(store.list())
    real = build_mod._upload_shard
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(build_mod, "_upload_shard", fail_second)
    with pytest.raises(OSError, match="disk full"):
        build_index(store, n_shards=2)
    assert list(system_tmp.rglob("*")) == []  # no spill or part file survives
    left = set(store.list()) - before
    assert left == {f"{layout.version_prefix('v000002')}/CLAIM"}, left
    lease, _ = read_lease(store, "v000002")
    assert lease is not None and lease.state == "abandoned"
    if scheme == "file":
        assert not (tmp_path / "site" / layout.version_prefix("v000002") / "_scratch").exists()


def test_gc_removes_only_dead_unpublished_versions(tmp_path) -> None:
    store = _site(tmp_path / "site", n_subjects=4)
    v1 = build_index(store).version
    create_release({"a": store}, "r1")
    v2 = build_index(store).version
    pointer, _ = read_current(store)

    def unpublished(ttl_s: float):
        lease = claim(store, pointer, ttl_s=ttl_s)
        store.write_bytes(layout.shard_key(lease.version, "images", 0, 1), b"rows")
        return lease

    dead = unpublished(0.05)
    live = unpublished(60).start()  # a running build, heartbeat on
    legacy = "v000099"  # a folder of a build from before leases: shards, no claim
    store.write_bytes(layout.shard_key(legacy, "images", 0, 1), b"rows")
    # a build killed after it published, before it removed its scratch (a local store's)
    spill = f"{layout.version_prefix(v2)}/_scratch/spill/part-0.tmp"
    store.write_bytes(spill, b"spilled rows")
    time.sleep(0.1)
    listing = store.list()
    dry = collect_garbage(store, dry_run=True)
    assert store.list() == listing
    assert sorted(dry.removed) == sorted([dead.version, legacy])
    reasons = {f.version: f.reason for f in dry.versions}
    assert "live lease" in reasons[live.version] and reasons[v1] and reasons[v2] == "current"
    assert dry.scratch_removed == [f"{layout.version_prefix(v2)}/_scratch"]
    done = collect_garbage(store)
    assert sorted(done.removed) == sorted([dead.version, legacy]) and done.objects_deleted == 3
    assert not store.exists(spill) and done.scratch_removed == dry.scratch_removed
    for v in (dead.version, legacy):
        assert folders(store)[v] == [f"{layout.version_prefix(v)}/CLAIM"]
    assert store.exists(layout.shard_key(live.version, "images", 0, 1))
    live.renew()  # the running build still owns its lease
    with pytest.raises(LeaseLost):
        dead.renew()  # a stalled build finds its lease collected and must not publish
    # the published history and the release stay readable
    assert open_atlas({"a": store}, purpose="research").images.count().value > 0
    pinned = open_atlas({"a": store}, purpose="research", versions=load_release({"a": store}, "r1"))
    assert pinned.versions == {"a": v1} and pinned.images.count().value > 0
    # once the running build's lease has expired, its folder is garbage too
    later = collect_garbage(store, now=time.time() + 120)
    assert later.removed == [live.version]
    with pytest.raises(LeaseLost):
        live.renew()
    live.stop()
    # version names are never reused
    assert build_index(store).version == "v000100"
    assert json.loads(store.read_bytes(layout.CURRENT_KEY))["version"] == "v000100"


def test_killed_remote_build_scratch_is_found_and_swept(tmp_path, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atlas.index import scratch

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    store = _site(f"memory://remote-scratch-{os.getpid()}", n_subjects=4)
    build_index(store)
    victim = _subjects(store)[0]
    # what a build of this (non-local) store killed on this machine leaves: a private folder
    lease = claim(store, read_current(store)[0], ttl_s=0.05)
    folder = scratch.make(store, lease, None)
    assert all(oct(p.stat().st_mode & 0o777) == "0o700" for p in (folder, folder.parent))
    pq.write_table(pa.table({"subject_id": [victim]}), folder / "part-0.parquet")
    time.sleep(0.1)  # the killed build's lease expires
    assert any(str(folder) in place for place in verify_erased(store, victim))
    erase_subject(store, victim, key=KEY)
    assert not folder.exists() and verify_erased(store, victim) == []


def test_subject_in_a_running_build_makes_erasure_incomplete_until_it_ends(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from atlas.index.erase import ErasureIncomplete

    store = _site(tmp_path / "site", n_subjects=4)
    build_index(store)
    indexed = set(_subjects(store))
    generate_site(store, "late", n_subjects=1, seed=5)  # ingested after the last build
    (victim,) = set(_subjects(store)) - indexed  # only in staging, and in the running build
    pointer, token = read_current(store)  # what the running build read when it started
    running = claim(store, pointer, ttl_s=1.5)  # live, no heartbeat: 1.5 s
    part = tmp_path / "part.parquet"
    pq.write_table(pa.table({"subject_id": [victim]}), part)
    store.write_bytes(layout.shard_key(running.version, "images", 0, 1), part.read_bytes())
    with pytest.raises(ErasureIncomplete, match="build that is still running"):
        erase_subject(store, victim, key=KEY)
    assert store.exists(layout.shard_key(running.version, "images", 0, 1))  # not touched
    # nor can that build publish: the erasure fenced CURRENT, so its compare-and-swap fails
    assert read_current(store)[0]["version"] == pointer["version"]
    assert not store.put_if_match(layout.CURRENT_KEY, b"{}", token)
    time.sleep(1.6)
    erase_subject(store, victim, key=KEY)
    assert verify_erased(store, victim) == []


def test_erasures_of_one_site_run_one_at_a_time(tmp_path) -> None:
    from atlas.index.erase import ERASURE_LOCK, ConcurrentErasure
    from atlas.index.lease import acquire

    store = _site(tmp_path / "site", n_subjects=4)
    build_index(store)
    first, second = _subjects(store)[:2]
    other = acquire(store, ERASURE_LOCK, "erasure")  # an erasure running elsewhere
    assert other is not None and acquire(store, ERASURE_LOCK, "erasure") is None
    with pytest.raises(ConcurrentErasure, match="another erasure is running"):
        erase_subject(store, first, key=KEY)
    assert verify_erased(store, first) != []  # nothing was done
    other.end("released")
    erase_subject(store, first, key=KEY)
    erase_subject(store, second, key=KEY)  # the lock is released after each erasure
    assert verify_erased(store, first) == [] and verify_erased(store, second) == []


def test_gc_never_removes_a_version_published_while_it_planned(tmp_path, monkeypatch) -> None:
    """A build that publishes (and ends its lease as published) after gc read _index/CURRENT
    must keep its version: gc judged it from a stale pointer."""
    import atlas.index.gc as gc_mod

    store = _site(tmp_path / "site", n_subjects=3)
    v1 = build_index(store).version
    stale = read_current(store)
    v2 = build_index(store).version  # published, lease ended "published"
    assert read_lease(store, v2)[0].state == "published"
    kept = sorted(folders(store)[v2])
    monkeypatch.setattr(gc_mod, "read_current", lambda s: stale)  # the pointer before v2
    report = collect_garbage(store)
    assert v2 not in report.removed and report.objects_deleted == 0
    assert gc_mod.remove_version(store, v2) is None
    monkeypatch.undo()
    assert sorted(folders(store)[v2]) == kept and read_current(store)[0]["version"] == v2
    assert open_atlas({"a": store}, purpose="research").versions == {"a": v2} != {"a": v1}


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no file owners on this platform")
@pytest.mark.parametrize("planted", ["open", "symlink"])
def test_remote_build_refuses_a_scratch_folder_someone_else_prepared(tmp_path, planted) -> None:
    """The scratch base name is predictable: in a shared temporary folder another user may
    create it first (world-writable, or a link to a folder they read). The build must refuse
    it, not spill index rows there."""
    from atlas.errors import Forbidden
    from atlas.index import scratch

    store = _site("memory://planted-scratch", n_subjects=2)
    workdir = tmp_path / "shared-tmp"
    workdir.mkdir()
    base = scratch.local_root(store, workdir).parent
    if planted == "open":
        base.mkdir()
        os.chmod(base, 0o777)
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        base.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(Forbidden, match=r"scratch folder .* Remove it"):
        build_index(store, workdir=str(workdir))
    assert read_current(store)[0] is None
    assert not list((tmp_path / "elsewhere" if planted == "symlink" else base).rglob("*"))
    with pytest.raises(Forbidden):  # nor does gc delete or erasure read anything there
        collect_garbage(store, workdir=str(workdir))


def test_erasure_that_lost_its_lock_stops_before_sweeping(tmp_path, monkeypatch) -> None:
    """An erasure that stalled past its lock's lease (another erasure took the lock) must not
    run the orphan sweep: it would delete the other erasure's freshly rewritten shards."""
    store = _site(tmp_path / "site", n_subjects=3)
    build_index(store)
    victim = _subjects(store)[0]
    swept = []
    real_amend = erase_mod._amend_manifests

    def amend_then_lose_the_lock(*args, **kwargs):
        real_amend(*args, **kwargs)
        other = {"state": "building", "owner": "another-erasure", "ttl_s": 120.0,
                 "heartbeat_unix": time.time()}  # fmt: skip
        store.write_bytes(erase_mod.ERASURE_LOCK, json.dumps(other).encode())

    monkeypatch.setattr(erase_mod, "_amend_manifests", amend_then_lose_the_lock)
    monkeypatch.setattr(erase_mod, "_sweep_index", lambda *a, **k: swept.append(a))
    with pytest.raises(LeaseLost, match=r"erasure lock .* taken by another erasure"):
        erase_subject(store, victim, key=KEY)
    assert swept == []
    assert json.loads(store.read_bytes(erase_mod.ERASURE_LOCK))["owner"] == "another-erasure"
    monkeypatch.undo()
    store.write_bytes(erase_mod.ERASURE_LOCK, json.dumps({"state": "released"}).encode())
    erase_subject(store, victim, key=KEY)  # the rerun completes
    assert verify_erased(store, victim) == []
