"""The sharded index: build, versions, queries, consent, releases, erasure, federation."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter

import pyarrow.parquet as pq
import pytest

from atlas import records
from atlas.errors import CorruptData, InvalidInput, NotFound, StoreUnavailable
from atlas.index import layout
from atlas.index.build import build_index
from atlas.index.catalog import open_atlas
from atlas.index.erase import erase_subject, verify_erased
from atlas.index.gc import collect_garbage
from atlas.index.publish import ConcurrentBuild, load_manifest, read_current
from atlas.index.release import create_release, load_release
from atlas.privacy import audit, consent
from atlas.privacy.pseudonyms import SiteKey
from atlas.storage import Store, open_store
from atlas.testing.records import generate_site

#: the site secret of the test sites (the audit log names subjects by keyed fingerprint)
KEY = SiteKey(b"test-site-secret-for-erasure-0123")


def _site(tmp_path, name="site-a", n_subjects=24, seed=0, scopes=("research",)) -> Store:
    store = open_store(tmp_path / name, site=name)
    gen = generate_site(store, name, n_subjects=n_subjects, seed=seed)
    for c in gen.collections:
        consent.set_collection_default(store, c, scopes)
    return store


def _staging(store: Store, table: str) -> list[dict]:
    return records.read_table(store, table).to_pylist()


def test_build_shards_subjects_and_checksums(tmp_path) -> None:
    store = _site(tmp_path)
    result = build_index(store, n_shards=4)
    assert result.version == "v000001" and result.parent is None
    images = _staging(store, "images")
    assert result.rows["images"] == len(images)
    assert result.rows["series"] == len(_staging(store, "series"))
    manifest = load_manifest(store, result.version)
    where: dict[str, set[int]] = {}
    for table in layout.TABLES:
        for entry in manifest["tables"][table]["shards"]:
            if not entry["key"]:
                continue
            data = store.read_bytes(entry["key"])
            import hashlib

            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            ids = pq.read_table(io.BytesIO(data), columns=["subject_id"])["subject_id"]
            for s in set(ids.to_pylist()):
                where.setdefault(s, set()).add(entry["shard"])
                assert layout.shard_of(s, 4) == entry["shard"]
    assert all(len(shards) == 1 for shards in where.values())  # a subject never spans shards


def test_queries_match_python_reference(tmp_path) -> None:
    store = _site(tmp_path)
    build_index(store, n_shards=2)
    atlas = open_atlas({"site-a": store}, purpose="research")
    images = _staging(store, "images")
    notes = _staging(store, "annotations")
    assert atlas.images.count().value == len(images)
    ct = [r for r in images if r["modality"] == "CT"]
    assert atlas.images.where(modality="CT").count().value == len(ct)
    tumour_images = {r["image_id"] for r in notes if r["label_name"] == "liver tumour"}
    q = atlas.images.where('modality == "CT" and label == "liver tumour"')
    expected = {r["image_id"] for r in ct if r["image_id"] in tumour_images}
    assert set(q.to_arrow().value["image_id"].to_pylist()) == expected
    assert atlas.images.where('site in ["site-a", "elsewhere"]').count().value == len(images)
    assert atlas.annotations.where(label="kidney").count().value == sum(
        r["label_name"] == "kidney" for r in notes
    )
    # sampling is reproducible and uniform-ish; iter_batches streams everything
    s1 = atlas.images.sample(50, seed=7).value["image_id"].to_pylist()
    s2 = atlas.images.sample(50, seed=7).value["image_id"].to_pylist()
    s3 = atlas.images.sample(50, seed=8).value["image_id"].to_pylist()
    assert s1 == s2 and s1 != s3 and len(set(s1)) == 50
    streamed = sum(b.num_rows for b in atlas.images.iter_batches(batch_size=100))
    assert streamed == len(images)
    assert atlas.images.limit(7).to_arrow().value.num_rows == 7
    one = images[3]["image_id"]
    got = atlas.get("images", image_id=one).value.to_pylist()
    assert len(got) == 1 and got[0]["site"] == "site-a"


def test_consent_scopes_filter_every_query(tmp_path) -> None:
    store = _site(tmp_path, scopes=("research",))
    build_index(store)
    research = open_atlas({"a": store}, purpose="research")
    training = open_atlas({"a": store}, purpose="ai-training")
    total = research.images.count().value
    assert total > 0 and training.images.count().value == 0
    # one subject withdraws from research; another consents to AI training
    rows = _staging(store, "images")
    by_subject = Counter(r["subject_id"] for r in rows)
    quitter, trainer = sorted(by_subject)[:2]
    consent.set_subject(store, quitter, [])
    consent.set_subject(store, trainer, ["research", "ai-training"])
    build_index(store)
    research = open_atlas({"a": store}, purpose="research")
    training = open_atlas({"a": store}, purpose="ai-training")
    assert research.images.count().value == total - by_subject[quitter]
    assert training.images.count().value == by_subject[trainer]
    with pytest.raises(InvalidInput, match="unknown purpose"):
        open_atlas({"a": store}, purpose="marketing")


def test_versions_releases_and_pinning(tmp_path) -> None:
    store = _site(tmp_path)
    v1 = build_index(store).version
    before = open_atlas({"a": store}, purpose="research").images.count().value
    assert create_release({"a": store}, "trial-2026") == {"a": v1}
    generate_site(store, "a", n_subjects=5, seed=99)  # new data arrives
    for c in ("lung-ct", "liver-ct", "brain-mr"):
        consent.set_collection_default(store, c, ["research"])
    v2 = build_index(store).version
    assert v2 == "v000002"
    now = open_atlas({"a": store}, purpose="research").images.count().value
    assert now > before
    pinned = open_atlas({"a": store}, purpose="research",
                        versions=load_release({"a": store}, "trial-2026"))  # fmt: skip
    assert pinned.versions == {"a": v1}
    assert pinned.images.count().value == before
    with pytest.raises(Exception, match="already exists"):
        create_release({"a": store}, "trial-2026")


@pytest.mark.parametrize("trial", range(3))
def test_two_builds_at_once_exactly_one_publishes(tmp_path, monkeypatch, trial) -> None:
    """Both builds read the same CURRENT token, then both try to publish (a barrier makes
    them overlap every time): exactly one publishes, the other gets ConcurrentBuild."""
    from atlas.index import build as build_module

    store = _site(tmp_path, n_subjects=4, seed=trial)
    build_index(store)
    barrier = threading.Barrier(2, timeout=60)
    real_publish = build_module.publish

    def publish_after_both_built(*args, **kwargs):
        barrier.wait()  # both builds have read CURRENT and written their shards
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(build_module, "publish", publish_after_both_built)
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(build_index(store).version)
        except ConcurrentBuild as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = [o for o in outcomes if isinstance(o, str)]
    errors = [o for o in outcomes if isinstance(o, ConcurrentBuild)]
    assert len(versions) == 1 and len(errors) == 1, outcomes
    assert "rerun" in str(errors[0])
    pointer, _ = read_current(store)
    assert pointer["version"] == versions[0]
    assert open_atlas({"a": store}, purpose="research").images.count().value > 0


def test_publish_with_a_stale_token_is_refused(tmp_path) -> None:
    from atlas.index.publish import publish

    store = _site(tmp_path, n_subjects=4)
    v1 = build_index(store).version
    _, stale = read_current(store)
    v2 = build_index(store).version
    pointer_before, token_before = read_current(store)
    assert pointer_before["version"] == v2 and token_before != stale
    manifest = {**load_manifest(store, v1), "version": "v000099"}
    for token in (stale, None):  # an older token, and "create" over an existing pointer
        with pytest.raises(ConcurrentBuild, match="published first"):
            publish(store, manifest, token)
        assert read_current(store) == (pointer_before, token_before)
    # the current token publishes
    assert publish(store, manifest, token_before) == "v000099"
    assert read_current(store)[0]["version"] == "v000099"


def test_corruption_is_detected_and_old_version_stays_readable(tmp_path) -> None:
    store = _site(tmp_path)
    v1 = build_index(store, n_shards=2).version
    v2 = build_index(store, n_shards=2).version
    manifest = load_manifest(store, v2)
    key = next(e["key"] for e in manifest["tables"]["images"]["shards"] if e["key"])
    raw = bytearray(store.read_bytes(key))
    raw[len(raw) // 2] ^= 0xFF
    store.write_bytes(key, bytes(raw))
    with pytest.raises(CorruptData, match="fails its checksum"):
        open_atlas({"a": store}, purpose="research", strict=True).images.count()
    partial = open_atlas({"a": store}, purpose="research").images.count()
    assert partial.partial and "a" in partial.missing_sites
    old = open_atlas({"a": store}, purpose="research", versions={"a": v1})
    assert old.images.count().value > 0
    # a damaged manifest is caught by the pointer's checksum
    store.write_bytes(layout.manifest_key(v2), b'{"version": "tampered"}')
    with pytest.raises(CorruptData, match="manifest"):
        open_atlas({"a": store}, purpose="research", strict=True)


def test_bad_filters_name_the_problem(tmp_path) -> None:
    store = _site(tmp_path, n_subjects=3)
    build_index(store)
    atlas = open_atlas({"a": store}, purpose="research")
    with pytest.raises(InvalidInput, match="modalty"):
        atlas.images.where('modalty == "CT"')
    with pytest.raises(InvalidInput):
        atlas.images.where('modality == "CT" or')
    injected = atlas.images.where('modality == "CT\'; DROP TABLE images; --"')
    assert injected.count().value == 0
    assert atlas.images.count().value > 0


def _touch_images(store: Store) -> None:
    for row in _staging(store, "series"):
        store.write_bytes(row["image_path"] + "/zarr.json", b"{}")
        store.write_bytes(row["image_path"] + "/0/c/0/0/0", b"pixels")


def test_erasure_removes_every_trace(tmp_path) -> None:
    store = _site(tmp_path)
    _touch_images(store)
    build_index(store, n_shards=2)
    build_index(store, n_shards=2)  # an older version that also lists the subject
    create_release({"a": store}, "r1")
    victim = sorted({r["subject_id"] for r in _staging(store, "series")})[0]
    consent.set_subject(store, victim, ["research"])
    total = open_atlas({"a": store}, purpose="research").images.count().value
    theirs = sum(r["subject_id"] == victim for r in _staging(store, "images"))
    report = erase_subject(store, victim, key=KEY)
    assert report.new_version == "v000003"
    assert report.index_rows_removed > 0 and report.objects_deleted > 0
    assert verify_erased(store, victim) == []
    assert all(victim not in k for k in store.list())
    for key in store.list():
        assert victim.encode() not in store.read_bytes(key), key
    atlas = open_atlas({"a": store}, purpose="research")
    assert atlas.images.count().value == total - theirs
    old = open_atlas({"a": store}, purpose="research", versions=load_release({"a": store}, "r1"))
    assert old.images.where(subject_id=victim).count().value == 0
    events = [e for e in audit.events(store) if e["action"].startswith("erase")]
    assert [e["action"] for e in events] == ["erase-start", "erase-done"]
    assert events[0]["subject"] == audit.fingerprint(KEY, store, victim)
    # erasing again changes nothing and says there is nothing of the subject to erase
    keys_before = store.list()
    with pytest.raises(NotFound, match=r"nothing of subject .* is stored.*records its erasure"):
        erase_subject(store, victim, key=KEY)
    assert store.list() == keys_before


def test_interrupted_erasure_resumes(tmp_path, monkeypatch) -> None:
    import atlas.index.erase as erase_mod

    store = _site(tmp_path)
    _touch_images(store)
    build_index(store)
    victim = sorted({r["subject_id"] for r in _staging(store, "series")})[1]

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(erase_mod, "_sweep_index", crash)  # after the index, before pixels
    with pytest.raises(KeyboardInterrupt):
        erase_subject(store, victim, key=KEY)
    # the index no longer lists the subject, even though pixels still exist
    atlas = open_atlas({"a": store}, purpose="research")
    assert atlas.images.where(subject_id=victim).count().value == 0
    monkeypatch.undo()
    erase_subject(store, victim, key=KEY)
    assert verify_erased(store, victim) == []


@pytest.mark.s3
def test_federation_over_seaweedfs_sites_with_one_down(seaweed_sites, tmp_path) -> None:
    from tests.stores import s3_store

    stores = {}
    expected = 0
    for i, server in enumerate(seaweed_sites):
        st = s3_store(server, site=server.name)
        gen = generate_site(st, server.name, n_subjects=6, seed=i)
        for c in gen.collections:
            consent.set_collection_default(st, c, ["research"])
        build_index(st)
        stores[server.name] = st
        expected += gen.n_images
    atlas = open_atlas(stores, purpose="research")
    result = atlas.images.count()
    assert result.value == expected and not result.partial
    table = atlas.images.where('site in ["site-a", "site-c"]').to_arrow().value
    assert set(table["site"].to_pylist()) == {"site-a", "site-c"}
    # a site that is down: partial result naming it, or an error with strict
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    from atlas.storage import RetryPolicy, Timeouts

    dead = open_store("s3://atlas/x", endpoint=f"http://127.0.0.1:{port}", site="offline",
                      key_env=stores["site-a"].location.key_env,
                      secret_env=stores["site-a"].location.secret_env,
                      timeouts=Timeouts(connect=1, read=2, client_attempts=1),
                      retry=RetryPolicy(attempts=1))  # fmt: skip
    partial = open_atlas({**stores, "offline": dead}, purpose="research")
    counted = partial.images.count()
    assert counted.partial and list(counted.missing_sites) == ["offline"]
    assert counted.value == expected
    with pytest.raises(StoreUnavailable):
        open_atlas({**stores, "offline": dead}, purpose="research", strict=True)


def test_missing_index_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    store = open_store(tmp_path / "empty", site="empty")
    with pytest.raises(NotFound, match="no index yet"):
        open_atlas({"empty": store}, purpose="research", strict=True)
    with pytest.raises(NotFound, match="no staging records"):
        build_index(store)
    assert store.list() == []  # a refused build claims no version


def test_reading_never_creates_a_store(tmp_path) -> None:
    missing = open_store(tmp_path / "nothing-here", site="x")
    calls = [
        lambda: open_atlas({"x": missing}, purpose="research", strict=True),
        lambda: load_release({"x": missing}, "r1"),
        lambda: create_release({"x": missing}, "r1"),
        lambda: build_index(missing),
        lambda: erase_subject(missing, "someone", key=KEY),
        lambda: collect_garbage(missing),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="no store at"):
            call()
    assert not (tmp_path / "nothing-here").exists()


def test_cli_query_count_json_and_errors(tmp_path) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    store = _site(tmp_path)
    runner = CliRunner()
    base = ["--store", str(tmp_path / "site-a"), "--site", "site-a"]
    assert runner.invoke(app, ["index", "build", *base]).exit_code == 0
    res = runner.invoke(app, ["query", 'modality == "CT"', "--count", "--format", "json", *base])
    assert res.exit_code == 0, res.output
    ct = sum(r["modality"] == "CT" for r in _staging(store, "images"))
    assert json.loads(res.output)["count"] == ct
    res = runner.invoke(app, ["query", 'label == "kidney"', "--limit", "3", "--format", "json",
                              "--table", "annotations", *base])  # fmt: skip
    rows = json.loads(res.output)
    kidneys = sum(r["label_name"] == "kidney" for r in _staging(store, "annotations"))
    assert kidneys > 3, "the generated site should have more kidney annotations than the limit"
    assert len(rows) == 3 and all(r["label_name"] == "kidney" for r in rows)
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "atlas.cli.app", "query", "modality = CT", *base],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "InvalidInput" in proc.stderr


@pytest.mark.slow
def test_bench_index_smoke_at_1m(tmp_path) -> None:
    from atlas.bench.index import run

    paths = run(tmp_path, images=1_000_000, sites=30, lookups=20)
    report = json.loads(paths["json"].read_text())
    measures = {r["measure"]: r for r in report["rows"]}
    assert report["meta"]["total_images"] == 1_000_000
    assert measures["point lookup p99, warm"]["atlas"] > 0
    assert measures["count, 1% selectivity"]["baseline"] > 0
    assert 0 < report["meta"]["rows_001pct"] < report["meta"]["rows_1pct"] < 1_000_000
    assert paths["md"].read_text().startswith("# Atlas index benchmark")


def test_annotations_intersecting_a_region(tmp_path) -> None:
    store = _site(tmp_path)
    build_index(store)
    atlas = open_atlas({"a": store}, purpose="research")
    notes = _staging(store, "annotations")
    series = Counter(r["series_id"] for r in notes).most_common(1)[0][0]
    z0, z1, y0, y1, x0, x1 = 0, 1000, 0, 250, 0, 512
    expected = {
        r["annotation_id"] for r in notes
        if r["series_id"] == series and z0 <= r["z_index"] < z1
        and r["bbox_y1"] > y0 and r["bbox_y0"] < y1 and r["bbox_x1"] > x0 and r["bbox_x0"] < x1
    }  # fmt: skip
    got = (
        atlas.annotations.where(series_id=series)
        .intersecting(z=(z0, z1), y=(y0, y1), x=(x0, x1))
        .to_arrow()
        .value
    )
    assert set(got["annotation_id"].to_pylist() if got is not None else []) == expected
    in_series = sum(r["series_id"] == series for r in notes)
    assert 0 < len(expected) < in_series  # the region selects some, not all
    with pytest.raises(InvalidInput, match="end must exceed"):
        atlas.annotations.intersecting(y=(5, 5))
