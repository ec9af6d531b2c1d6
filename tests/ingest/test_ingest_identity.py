"""Who data belongs to: subjects without Patient ID, mixed-patient series, one series in one
collection, the store's site, concurrent ingests, where ingest runs, the demo's sources."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from atlas import records
from atlas.errors import ConfigError
from atlas.ingest import claims
from atlas.ingest.driver import ingest, write_report
from atlas.ingest.series import IngestOptions
from atlas.ome import find_incomplete, open_image
from atlas.records import journal, ownership
from atlas.storage import open_store

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
OPTIONS = IngestOptions(secret_env=SECRET_ENV)
BURNED_OK = IngestOptions(secret_env=SECRET_ENV, allow_burned_in=True)
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _deid():
    from atlas.privacy import Deidentifier

    return Deidentifier(SECRET.encode())


def _texts_of_store(root: Path) -> tuple[list[tuple[Path, bytes]], list[str]]:
    """Every file's bytes, plus the staging/index Parquet tables decoded to text."""
    import pyarrow.parquet as pq

    blobs = [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]
    texts = [
        json.dumps(pq.read_table(io.BytesIO(raw)).to_pylist(), default=str)
        for p, raw in blobs
        if p.suffix == ".parquet"
    ]
    return blobs, texts


def _assert_absent(values: list[str], root: Path, extra_texts: list[str]) -> None:
    blobs, texts = _texts_of_store(root)
    assert blobs
    for value in values:
        for p, raw in blobs:
            assert value.encode() not in raw, f"an original value is in {p.relative_to(root)}"
        for text in [*texts, *extra_texts]:
            assert value not in text


# -- 1. subjects without Patient ID ------------------------------------------------------------


def _no_patient_id_files() -> list[Path]:
    """pydicom's own files (and pydicom-data's) that are images without a Patient ID."""
    import data_store
    import pydicom

    roots = [Path(pydicom.data.__file__).parent, Path(data_store.__file__).parent]
    out = []
    for path in sorted(p for root in roots for p in root.rglob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if str(ds.get("PatientID", "") or "").strip():
            continue
        if "StudyInstanceUID" in ds and "SeriesInstanceUID" in ds and "Rows" in ds:
            out.append(path)
    return out


def test_real_files_without_patient_id_get_a_stable_subject(tmp_path) -> None:
    import pydicom

    files = _no_patient_id_files()
    assert len(files) >= 5, "pydicom ships several images without a Patient ID"
    a = ingest([str(f) for f in files], store=open_store(tmp_path / "a"), site="s",
               collection="c", options=BURNED_OK)  # fmt: skip
    reasons = [q.reason for q in a.quarantined]
    assert not a.failed, reasons
    assert not any("internal error" in r or "patient_id" in r for r in reasons), reasons
    assert len(a.written) >= 5
    rows = records.read_table(open_store(tmp_path / "a"), "series", "c").to_pylist()
    assert {r["subject_source"] for r in rows} <= {"name_birth_date", "study_uid"}
    # emri_small.dcm has a birth date but no name: one subject per study
    deid = _deid()
    emri = pydicom.dcmread(next(f for f in files if f.name == "emri_small.dcm"))
    expected = deid.subject_id(f"\x00study\x00{emri.StudyInstanceUID}")
    assert expected in {r["subject_id"] for r in rows}
    # stable: the same inputs give the same subjects and paths in another store
    b = ingest([str(f) for f in files], store=open_store(tmp_path / "b"), site="s",
               collection="c", options=BURNED_OK)  # fmt: skip
    assert sorted(b.images) == sorted(a.images)
    report = write_report(a, tmp_path / "report.json").read_text()
    originals = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        originals |= {str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID")}
        name = str(ds.get("PatientName", "") or "")
        if len(name.strip("^ ")) >= 6:
            originals.add(name)
    _assert_absent(sorted(v for v in originals if len(v) >= 6), tmp_path / "a", [report])


def _crafted(path: Path, n: int, **attrs: str | None) -> Path:
    """CT_small.dcm as a new study/series/instance ``n`` with some patient attributes set."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for role in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, role, generate_uid(entropy_srcs=[f"atlas-test-{role}-{n}"]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def test_crafted_subject_keys_and_subject_map(tmp_path) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    src = tmp_path / "src"
    named = _crafted(src / "named.dcm", 1, PatientID=None, PatientName="Doe^Jane",
                     PatientBirthDate="19610203")  # fmt: skip
    _crafted(src / "same.dcm", 2, PatientID="", PatientName="DOE^JANE ^",
                    PatientBirthDate="19610203")  # fmt: skip
    anonymous = _crafted(src / "anonymous.dcm", 3, PatientID=None, PatientName="ANONYMOUS",
                         PatientBirthDate="19610203")  # fmt: skip
    nothing = _crafted(src / "nothing.dcm", 4, PatientID=None, PatientName=None,
                       PatientBirthDate=None)  # fmt: skip
    known = _crafted(src / "known.dcm", 5, PatientID="P-778899")
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    summary = ingest([str(src)], store=store, site="s", collection="c", options=OPTIONS)
    assert len(summary.written) == 5 and not summary.quarantined
    rows = records.read_table(store, "series", "c").to_pylist()
    deid = _deid()
    import pydicom

    uid = {p.name: pydicom.dcmread(p).StudyInstanceUID for p in (anonymous, nothing, named)}
    by_subject = {r["subject_id"]: r["subject_source"] for r in rows}
    name_key = deid.subject_id("\x00name+birth-date\x00DOE^JANE\x0019610203")
    assert by_subject[name_key] == "name_birth_date"
    assert sum(r["subject_id"] == name_key for r in rows) == 2  # named.dcm and same.dcm
    assert by_subject[deid.subject_id(f"\x00study\x00{uid['anonymous.dcm']}")] == "study_uid"
    assert by_subject[deid.subject_id(f"\x00study\x00{uid['nothing.dcm']}")] == "study_uid"
    assert by_subject[deid.subject_id("P-778899")] == "patient_id"
    # the site knows better: map the anonymous study (by UID) and nothing.dcm (by path) to
    # the patient that known.dcm names
    mapping = tmp_path / "subjects.csv"
    mapping.write_text(
        "kind,key,patient_id\n"
        f"study,{uid['anonymous.dcm']},P-778899\n"
        f"path,src/nothing.dcm,P-778899\n",
        encoding="utf-8",
    )
    mapped_dir = tmp_path / "mapped"
    report = tmp_path / "report.json"
    args = ["ingest", str(anonymous), str(nothing), str(known), "--site", "s", "--collection",
            "c", "--store", str(mapped_dir), "--secret-env", SECRET_ENV, "--report",
            str(report), "--subject-map", str(mapping), "--workers", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={SECRET_ENV: SECRET})
    assert result.exit_code == 0, result.output
    mapped = records.read_table(open_store(mapped_dir), "series", "c").to_pylist()
    assert {r["subject_id"] for r in mapped} == {deid.subject_id("P-778899")}
    assert sorted(r["subject_source"] for r in mapped) == ["map", "map", "patient_id"]
    originals = ["Doe^Jane", "DOE^JANE", "19610203", "P-778899", *uid.values()]
    _assert_absent(originals, store_dir, [])
    _assert_absent(originals, mapped_dir, [result.output, report.read_text()])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("study,key\n", "first line must be the header"),
        ("kind,key,patient_id\n", "has no entries"),
        ("kind,key,patient_id\nfolder,x,P-SECRET-1\n", "line 2: kind must be one of"),
        ("kind,key,patient_id\nstudy,1.2.3\n", "line 2: expected 3 fields"),
        ("kind,key,patient_id\nstudy,not-a-uid,P-SECRET-1\n", "line 2: the key is not a DICOM"),
        ("kind,key,patient_id\nstudy,1.2.3,\n", "line 2: key and patient_id must not be empty"),
        ("kind,key,patient_id\npath,missing.dcm,P-SECRET-1\n", "line 2: the path does not"),
        (
            "kind,key,patient_id\nseries,1.2.3,P-SECRET-1\n\nseries,1.2.3,P-SECRET-2\n",
            "line 4: this series is already mapped to another",
        ),
    ],
)
def test_subject_map_errors_are_clear_and_name_no_value(tmp_path, text, message) -> None:
    from atlas.ingest.subjects import SubjectMap

    mapping = tmp_path / "map.csv"
    mapping.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        SubjectMap.from_csv(mapping)
    assert "P-SECRET" not in str(err.value)


def test_bad_subject_map_is_one_error_line(tmp_path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("kind,key,patient_id\nstudy,1.2.3,P-SECRET-1,extra\n", encoding="utf-8")
    src = tmp_path / "src"
    src.mkdir()
    args = ["ingest", str(src), "--site", "s", "--collection", "c", "--store",
            str(tmp_path / "store"), "--secret-env", SECRET_ENV, "--subject-map",
            str(mapping), "--report", str(tmp_path / "r.json")]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", "from atlas.cli.app import main; main()", *args],
        env={**os.environ, SECRET_ENV: SECRET, "PYTHONPATH": SRC},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert "line 2: expected 3 fields" in " ".join(result.stderr.split())
    assert "P-SECRET" not in result.stderr + result.stdout


# -- 2. a series that mixes patients -------------------------------------------------------------


def test_mixed_patient_series_is_split_and_each_patient_erases(tmp_path) -> None:
    import pydicom

    from atlas.index.build import build_index
    from atlas.index.catalog import open_atlas
    from atlas.index.erase import erase_subject, verify_erased
    from atlas.privacy import consent
    from atlas.privacy.pseudonyms import SiteKey
    from atlas.testing.synthetic import make_study

    study = make_study(tmp_path / "study", shape=(8, 32, 32), seed=21, with_seg=False,
                       with_rtstruct=False, with_nifti=False)  # fmt: skip
    other = "OTHER-PATIENT-4242"
    for f in study.ct_files[4:]:  # the second half of the slices names another patient
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = other, "Other^Patient"
        ds.save_as(f)
    store = open_store(tmp_path / "store", site="s")
    summary = ingest([str(study.ct_files[0].parent)], store=store, site="s", collection="c",
                     options=OPTIONS)  # fmt: skip
    assert len(summary.written) == 2 and not summary.quarantined
    deid = _deid()
    first, second = deid.subject_id(study.patient_id), deid.subject_id(other)
    series = records.read_table(store, "series", "c").to_pylist()
    assert {r["subject_id"] for r in series} == {first, second}
    assert all(r["split_by_subject"] for r in series)
    assert len({r["series_id"] for r in series}) == 2
    assert len({r["study_id"] for r in series}) == 2
    assert all(r["size_z"] == 4 for r in series)
    for row in series:
        assert row["image_path"].split("/")[1] == row["subject_id"]
        header = open_image(store, row["image_path"]).metadata.extra["dicom"]
        assert header["0020000E"]["Value"][0] == row["series_id"]  # Series Instance UID
    images = records.read_table(store, "images", "c").to_pylist()
    assert len({r["image_id"] for r in images}) == len(images) == 8
    consent.set_collection_default(store, "c", ["research"])
    build_index(store)
    report = erase_subject(store, second, key=SiteKey(SECRET.encode()))
    assert report.objects_deleted > 0 and verify_erased(store, second) == []
    atlas = open_atlas({"s": store}, purpose="research")
    left = atlas.images.to_arrow().value.to_pylist()
    assert len(left) == 4 and {r["subject_id"] for r in left} == {first}
    kept = next(r for r in series if r["subject_id"] == first)
    assert open_image(store, kept["image_path"]).read(0).shape == (4, 32, 32)
    _assert_absent([other, study.patient_id], tmp_path / "store", [])


# -- 3. one series, one collection ----------------------------------------------------------------


def test_a_series_belongs_to_one_collection(tmp_path) -> None:
    from pydicom.data import get_testdata_file

    from atlas.index.build import build_index
    from atlas.index.catalog import open_atlas
    from atlas.privacy import consent

    ct = get_testdata_file("CT_small.dcm")
    store = open_store(tmp_path / "store", site="s")
    first = ingest([ct], store=store, site="s", collection="lung", options=OPTIONS)
    assert len(first.written) == 1
    second = ingest([ct], store=store, site="s", collection="trial", options=OPTIONS)
    assert not second.written and [o.status for o in second.failed] == ["quarantined"]
    (why,) = {q.reason for q in second.quarantined}
    assert "already in collection 'lung'" in why and "erase it there first" in why
    again = ingest([ct], store=store, site="s", collection="lung", options=OPTIONS)
    assert len(again.skipped) == 1  # the owning collection still resumes and skips
    for c in ("lung", "trial"):
        consent.set_collection_default(store, c, ["research"])
    build_index(store)
    atlas = open_atlas({"s": store}, purpose="research")
    image_id = records.read_table(store, "images", "lung").to_pylist()[0]["image_id"]
    assert len(atlas.get("images", image_id=image_id).value.to_pylist()) == 1
    assert atlas.images.count().value == 1


# -- 4. a store remembers its site -----------------------------------------------------------


def test_store_remembers_its_site(tmp_path) -> None:
    from pydicom.data import get_testdata_file
    from typer.testing import CliRunner

    from atlas.cli.app import app
    from atlas.index.build import build_index

    ct = get_testdata_file("CT_small.dcm")
    store_dir = tmp_path / "store"
    ingest([ct], store=open_store(store_dir), site="amsterdam", collection="c", options=OPTIONS)
    assert ownership.recorded_site(open_store(store_dir)) == "amsterdam"
    with pytest.raises(ConfigError, match=r"belongs to site 'amsterdam'.*not 'demo'"):
        ingest([ct], store=open_store(store_dir), site="demo", collection="d", options=OPTIONS)
    assert not (store_dir / "d").exists()
    with pytest.raises(ConfigError, match="belongs to site 'amsterdam'"):
        build_index(open_store(store_dir, site="demo"))
    runner = CliRunner()
    bad = runner.invoke(app, ["index", "build", "--store", str(store_dir), "--site", "demo"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
    assert "pass --site amsterdam" in str(bad.exception)
    ok = runner.invoke(app, ["index", "build", "--store", str(store_dir), "--site", "amsterdam"])
    assert ok.exit_code == 0, ok.output
    # without --site, a --store command works as the site the store records
    shown = runner.invoke(app, ["index", "show", "--store", str(store_dir)])
    assert shown.exit_code == 0, shown.output
    assert "amsterdam" in shown.output and "local" not in shown.output
    # two first ingests with different names at once: exactly one name is recorded
    import threading

    fresh = open_store(tmp_path / "fresh")
    fresh.ensure_reachable(create=True)
    errors: list[str] = []

    def claim(name: str) -> None:
        try:
            ownership.claim_site(fresh, name)
        except ConfigError:
            errors.append(name)

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("a", "b", "c", "d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3 and ownership.recorded_site(fresh) not in errors


# -- 5. two ingests of the same source at once -------------------------------------------------

RACER = f"""
import json, os, sys, time
from pathlib import Path
from atlas.ingest.driver import ingest
from atlas.ingest.series import IngestOptions
from atlas.storage import open_store
store, go, ready, sources = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
ready.write_text("ready")
while not go.exists():
    time.sleep(0.005)
s = ingest(sources, store=open_store(store), site="s", collection="race",
           options=IngestOptions(secret_env={SECRET_ENV!r}))
print(json.dumps({{"written": len(s.written), "skipped": len(s.skipped), "busy": len(s.busy),
                  "failed": len(s.failed), "reasons": [q.reason for q in s.quarantined],
                  "reasons_busy": [o.status_reason for o in s.busy]}}))
"""


def test_two_ingests_of_the_same_source_at_once(tmp_path) -> None:
    from atlas.testing.synthetic import make_study

    dirs = []
    for seed in range(3):
        s = make_study(tmp_path / f"study{seed}", shape=(16, 64, 64), seed=30 + seed,
                       with_seg=False, with_rtstruct=False, with_nifti=False)  # fmt: skip
        dirs.append(str(s.ct_files[0].parent))
    store_dir, go = tmp_path / "store", tmp_path / "go"
    env = {**os.environ, SECRET_ENV: SECRET, "PYTHONPATH": SRC}
    procs = []
    for k in range(2):
        ready = tmp_path / f"ready{k}"
        cmd = [sys.executable, "-c", RACER, str(store_dir), str(go), str(ready), *dirs]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    go.write_text("go")
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        assert r["failed"] == 0 and r["reasons"] == [], r
        assert r["written"] + r["skipped"] + r["busy"] == 3
        assert all("being ingested by another run" in n for n in r["reasons_busy"])
    assert sum(r["written"] for r in results) == 3, results  # every series written once
    store = open_store(store_dir)
    assert len(journal.finished(store, "race")) == 3
    assert find_incomplete(store, "race") == []
    assert store.list(claims.CLAIMS_PREFIX + "/") == []  # every claim was released
    images = records.read_table(store, "images", "race").to_pylist()
    assert len(images) == len({r["image_id"] for r in images}) == 3 * 16
    rerun = ingest(dirs, store=store, site="s", collection="race", options=OPTIONS)
    assert len(rerun.skipped) == 3


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path) -> None:
    store = open_store(tmp_path / "store")
    store.ensure_reachable(create=True)
    held = claims.acquire(store, "2.25.1")
    assert held is not None
    assert claims.acquire(store, "2.25.1") is None  # a live run holds it
    held.release()
    assert not store.exists(claims.claim_key("2.25.1"))
    # a claim left by a process that is gone is taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    left = {"run": "x", "host": socket.gethostname(), "pid": dead.pid,
            "renewed_unix": time.time()}  # fmt: skip
    store.write_bytes(claims.claim_key("2.25.2"), json.dumps(left).encode())
    taken = claims.acquire(store, "2.25.2")
    assert taken is not None
    taken.release()
    # a claim of another host counts until it is not renewed for STALE_AFTER_S
    other = {**left, "host": "elsewhere", "pid": 1}
    store.write_bytes(claims.claim_key("2.25.3"), json.dumps(other).encode())
    assert claims.acquire(store, "2.25.3") is None
    old = {**other, "renewed_unix": time.time() - claims.STALE_AFTER_S - 1}
    store.write_bytes(claims.claim_key("2.25.3"), json.dumps(old).encode())
    taken = claims.acquire(store, "2.25.3")
    assert taken is not None
    taken.release()


# -- 6. memory:// and worker processes ---------------------------------------------------------


def test_memory_store_is_refused_for_worker_processes(tmp_path) -> None:
    from pydicom.data import get_testdata_file
    from typer.testing import CliRunner

    from atlas.cli.app import app

    ct = get_testdata_file("CT_small.dcm")
    store = open_store("memory://identity-test")
    with pytest.raises(ConfigError, match="lives in this process only"):
        ingest([ct], store=store, site="s", collection="c", workers=2, options=OPTIONS)
    with pytest.raises(ConfigError, match="lives in this process only"):
        ingest([ct], store=store, site="s", collection="c", scheduler="tcp://127.0.0.1:9",
               options=OPTIONS)  # fmt: skip
    summary = ingest([ct], store=store, site="s", collection="c", options=OPTIONS)
    assert len(summary.written) == 1
    assert open_image(store, summary.images[0]).read(0).shape == (1, 128, 128)
    args = ["ingest", ct, "--site", "s", "--collection", "c", "--store", "memory://cli-test",
            "--secret-env", SECRET_ENV, "--report", str(tmp_path / "r.json")]  # fmt: skip
    result = CliRunner().invoke(app, args, env={SECRET_ENV: SECRET})
    assert isinstance(result.exception, ConfigError)
    assert "would end with this command" in str(result.exception)


# -- 7. the documented Python call in a plain script ---------------------------------------------

PLAIN = """
from pydicom.data import get_testdata_file
from atlas.ingest.driver import ingest
from atlas.ingest.series import IngestOptions
from atlas.storage import open_store

summary = ingest([get_testdata_file("CT_small.dcm")], store=open_store({store!r}),
                 site="s", collection="c", options=IngestOptions(secret_env={env!r}){extra})
print("written", len(summary.written))
"""


def _script(tmp_path: Path, name: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    store = str(tmp_path / f"store-{name}")
    path.write_text(PLAIN.format(store=store, env=SECRET_ENV, extra=extra), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(path)], env={**os.environ, SECRET_ENV: SECRET, "PYTHONPATH": SRC},
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip


def test_plain_script_without_main_guard(tmp_path) -> None:
    done = _script(tmp_path, "plain.py")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "written 1" in done.stdout
    t0 = time.monotonic()
    asked = _script(tmp_path, "workers.py", ", workers=2")
    assert asked.returncode != 0 and time.monotonic() - t0 < 60
    assert 'if __name__ == "__main__":' in asked.stderr and "line 7" in asked.stderr
    assert "Traceback" in asked.stderr  # a Python error for a Python caller, no hang
    guarded = tmp_path / "guarded.py"
    body = PLAIN.format(store=str(tmp_path / "store-g"), env=SECRET_ENV, extra=", workers=1")
    head, call = body.split("summary = ", 1)
    guarded.write_text(
        head + 'if __name__ == "__main__":\n' + textwrap.indent("summary = " + call, "    "),
        encoding="utf-8",
    )
    ok = subprocess.run([sys.executable, str(guarded)],
                        env={**os.environ, SECRET_ENV: SECRET, "PYTHONPATH": SRC},
                        capture_output=True, text=True, timeout=180, cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0 and "written 1" in ok.stdout, ok.stderr[-2000:]


# -- 8. the demo's sources live beside the store -----------------------------------------------


def test_demo_keeps_its_sources_out_of_the_store(tmp_path, monkeypatch) -> None:
    from rich.console import Console

    from atlas.demo import demo_sources_dir, run_demo
    from atlas.testing.synthetic import make_study

    monkeypatch.setenv("ATLAS_SITE_SECRET", SECRET)
    data_dir = tmp_path / "atlas-data"
    (data_dir / "demo-dicom").mkdir(parents=True)  # left by an earlier version of the demo
    (data_dir / "demo-dicom" / "old.dcm").write_bytes(b"\0" * 128 + b"DICM")
    run_demo(data_dir, (16, 64, 64), console=Console(file=io.StringIO()))
    sources = demo_sources_dir(data_dir)
    assert sources.parent == data_dir.parent and sources.is_dir()
    assert list(sources.rglob("*.dcm")), "the demo's DICOM study lives beside the store"
    blobs, _ = _texts_of_store(data_dir)
    for p, raw in blobs:
        assert raw[128:132] != b"DICM", f"a DICOM file in the store: {p.relative_to(data_dir)}"
        assert p.suffix not in (".dcm", ".nii", ".gz"), p
    twin = make_study(tmp_path / "twin", shape=(64, 256, 256), seed=7)  # the demo's own study
    assert twin.patient_id and twin.study_uid
    _assert_absent([c for c in twin.canaries if len(c) >= 6], data_dir, [])


def test_split_series_gets_only_its_own_patients_segmentations() -> None:
    from atlas.ingest.model import FileRef, InstanceInfo, SeriesGroup
    from atlas.ingest.subjects import assign, segmentations_for

    def inst(name: str, patient: str, modality: str = "CT") -> InstanceInfo:
        return InstanceInfo(FileRef(name), "1.2.840.10008.5.1.4.1.1.2", f"1.2.{len(name)}",
                            "1.2.3", "1.2.3.4", modality, patient)  # fmt: skip

    group = SeriesGroup("1.2.3", "1.2.3.4", "CT", [inst("a1", "A"), inst("b1", "B"),
                                                    inst("a2", "A")])  # fmt: skip
    parts = assign([group])
    assert [(p.subject_key, len(p.instances), p.split_by_subject) for p in parts] == [
        ("A", 2, True), ("B", 1, True)
    ]  # fmt: skip
    seg_b, seg_c = inst("seg-b", "B", "SEG"), inst("seg-c", "C", "SEG")
    per_part, problems = segmentations_for(parts, {"1.2.3.4": [seg_b, seg_c]})
    assert per_part[id(parts[0])] == [] and per_part[id(parts[1])] == [seg_b]
    assert [q.ref.path for q in problems] == ["seg-c"]
    assert "mixes patients" in problems[0].reason


def test_claims_are_renewed_and_released_when_a_series_fails(tmp_path, monkeypatch) -> None:
    from pydicom.data import get_testdata_file

    import atlas.ingest.series as series_module

    store = open_store(tmp_path / "store")
    store.ensure_reachable(create=True)
    monkeypatch.setattr(claims, "RENEW_S", 0.05)
    held = claims.acquire(store, "2.25.9")
    assert held is not None
    first = json.loads(store.read_bytes(claims.claim_key("2.25.9")))["renewed_unix"]
    deadline = time.monotonic() + 20
    again = first
    while again == first and time.monotonic() < deadline:
        time.sleep(0.05)
        again = json.loads(store.read_bytes(claims.claim_key("2.25.9")))["renewed_unix"]
    assert again > first and not held.lost
    held.release()

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(series_module, "_labels_for_volume", broken)
    summary = ingest([get_testdata_file("CT_small.dcm")], store=store, site="s", collection="c",
                     options=OPTIONS)  # fmt: skip
    assert [o.status for o in summary.failed] == ["failed"]
    assert store.list(claims.CLAIMS_PREFIX + "/") == []  # released although the task raised
