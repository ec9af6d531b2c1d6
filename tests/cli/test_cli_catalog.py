"""The catalog commands tell the truth: exit codes, one ``error:`` line, hints, nothing created."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from atlas.index import layout
from atlas.index.build import build_index
from atlas.index.lease import claim
from atlas.privacy import consent
from atlas.storage import Store, open_store
from atlas.testing.records import generate_site

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _site(root: Path, site: str = "a", consented=("lung-ct",)) -> Store:
    store = open_store(root, site=site)
    generate_site(store, site, n_subjects=6, seed=1, collections=("lung-ct", "brain-mr"))
    for c in consented:
        consent.set_collection_default(store, c, ["research"])
    return store


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_empty_result_says_which_consent_is_missing(tmp_path, atlas_cli) -> None:
    root = tmp_path / "site"
    _site(root)
    where = ["--store", str(root), "--site", "a"]
    assert atlas_cli("index", "build", *where)[0] == 0
    code, out, err = atlas_cli("query", 'collection == "brain-mr"', "--count", *where)
    assert (code, out) == (0, "0\n")
    note = " ".join(err.split())
    assert "no recorded consent covers purpose 'research' for collection(s) brain-mr" in note
    hint = f"atlas consent set research --collection brain-mr --store {root} --site a"
    assert hint in note and f"atlas index build --store {root} --site a" in note
    # JSON rows: [] on stdout, the same note on stderr, never a count
    code, out, err = atlas_cli("query", 'collection == "brain-mr"', "--format", "json", *where)
    assert (code, json.loads(out)) == (0, []) and "brain-mr" in err
    # consent recorded but not yet built: the note says to rebuild
    assert atlas_cli("consent", "set", "research", "--collection", "brain-mr", *where)[0] == 0
    code, out, err = atlas_cli("query", 'collection == "brain-mr"', "--count", *where)
    assert out == "0\n" and "after index version v000001 was built" in " ".join(err.split())
    # following the hint makes the rows visible, and the note goes away
    assert atlas_cli("index", "build", *where)[0] == 0
    code, out, err = atlas_cli("query", 'collection == "brain-mr"', "--count", *where)
    assert code == 0 and int(out) > 0 and err == ""
    # a purpose nobody consented to names every collection
    code, out, err = atlas_cli("query", "--count", "--purpose", "ai-training", *where)
    assert out == "0\n" and "brain-mr, lung-ct" in err


def test_no_site_answered_fails_and_creates_nothing(tmp_path, atlas_cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = atlas_cli("query", "--count")  # the default store ./atlas-data
    assert code == 2 and out == ""
    assert _error_lines(err) == [
        f"error: site local did not answer: NotFound: no store at {tmp_path / 'atlas-data'} "
        "(nothing was created); check the path, or run `atlas ingest` into it first "
        "[site 'local']"
    ]
    sites = tmp_path / "sites.toml"
    sites.write_text(
        f"[[site]]\nname = 'x'\nstore = '{tmp_path / 'x'}'\n"
        f"[[site]]\nname = 'y'\nstore = '{tmp_path / 'y'}'\n"
    )
    for command in (["query", "--count"], ["query", "--format", "json"], ["index", "show"]):
        code, out, err = atlas_cli(*command, "--sites", str(sites))
        lines = _error_lines(err)
        assert code == 2 and out == "" and len(lines) == 2, err
        assert lines[0].startswith("error: site x did not answer: NotFound: no store at")
        assert lines[1].startswith("error: site y did not answer: NotFound: no store at")
    for command in (
        ["release", "create", "r1"],
        ["erase", "--subject", "s1"],
        ["index", "gc"],
        ["index", "build"],
        ["consent", "set", "research", "--collection", "c1"],
    ):
        code, out, err = atlas_cli(*command, "--store", str(tmp_path / "z"))
        assert code == 2 and "no store at" in err, (command, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sites.toml"]


def test_release_without_the_site_is_one_error_line(tmp_path, atlas_cli) -> None:
    root = tmp_path / "site"
    _site(root)
    assert atlas_cli("index", "build", "--store", str(root), "--site", "a")[0] == 0
    assert atlas_cli("release", "create", "r1", "--store", str(root), "--site", "a")[0] == 0
    code, out, err = atlas_cli("query", "--release", "r1", "--count", "--store", str(root),
                               "--site", "renamed")  # fmt: skip
    lines = _error_lines(err)
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("error: NotFound: release 'r1' stored at site 'renamed' pins no")
    assert "holds ['a']" in lines[0]
    code, out, err = atlas_cli("query", "--release", "r1", "--count", "--store", str(root),
                               "--site", "a")  # fmt: skip
    assert code == 0 and int(out) > 0


def test_invalid_shards_is_one_line_and_claims_nothing(tmp_path) -> None:
    root = tmp_path / "site"
    store = _site(root)
    before = store.list()
    for bad in ("3", "-2", "8192"):
        proc = subprocess.run(
            [sys.executable, "-m", "atlas.cli.app", "index", "build", "--shards", bad,
             "--store", str(root), "--site", "a"],
            capture_output=True, text=True, timeout=120, env={"PYTHONPATH": SRC, "PATH": ""},
        )  # fmt: skip
        lines = _error_lines(proc.stderr)
        assert proc.returncode == 2 and proc.stdout == "" and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: InvalidInput: the number of shards must be a power")
        assert "Traceback" not in proc.stderr
    assert store.list() == before


def test_partial_build_prints_what_was_published_and_each_failure(tmp_path, atlas_cli) -> None:
    _site(tmp_path / "a")
    (tmp_path / "b").mkdir()  # a store with nothing ingested
    sites = tmp_path / "sites.toml"
    sites.write_text(
        "".join(f"[[site]]\nname = '{n}'\nstore = '{tmp_path / n}'\n" for n in ("a", "b", "c"))
    )
    code, out, err = atlas_cli("index", "build", "--sites", str(sites))
    assert code == 2
    assert "Index builds" in out and "v000001" in out
    table_rows = [line for line in out.splitlines() if "v000001" in line]
    assert len(table_rows) == 1 and table_rows[0].split()[1] == "a"
    lines = _error_lines(err)
    assert len(lines) == 2
    assert lines[0].startswith("error: site b was not built: NotFound: no staging records")
    assert lines[1].startswith("error: site c was not built: NotFound: no store at")
    assert not (tmp_path / "c").exists()


def test_gc_and_erase_on_the_command_line(tmp_path, atlas_cli, monkeypatch) -> None:
    monkeypatch.setenv("ATLAS_SITE_SECRET", "test-site-secret-for-erasure-0123")
    root = tmp_path / "site"
    store = _site(root)
    build_index(store)
    where = ["--store", str(root), "--site", "a"]
    dead = claim(store, None, ttl_s=0.01)
    store.write_bytes(layout.shard_key(dead.version, "images", 0, 1), b"rows")
    code, out, _ = atlas_cli("index", "gc", "--dry-run", *where)
    assert code == 0 and "would remove" in out and dead.version in out
    assert store.exists(layout.shard_key(dead.version, "images", 0, 1))
    code, out, _ = atlas_cli("index", "gc", *where)
    assert code == 0 and "removed" in out
    assert not store.exists(layout.shard_key(dead.version, "images", 0, 1))
    code, out, err = atlas_cli("erase", "--subject", "nobody-by-that-name", *where)
    lines = _error_lines(err)
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("error: NotFound: nothing of subject")
