"""Ingest end to end: synthetic and real DICOM → de-identified OME-Zarr, records, journal."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.source_truth import assert_images_match_sources, source_series

from atlas import records
from atlas.ingest.driver import ingest, write_report
from atlas.ingest.series import IngestOptions
from atlas.ome import find_incomplete, open_image
from atlas.records import journal
from atlas.storage import Store, open_store

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
OPTIONS = IngestOptions(secret_env=SECRET_ENV)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    from atlas.testing.synthetic import make_study

    return make_study(tmp_path_factory.mktemp("study"), shape=(20, 64, 64), seed=3)


def sources_of(study) -> list[str]:
    """The CT folder plus the SEG/RTSTRUCT files (the NIfTI mask goes to --labels)."""
    ct_dir = study.ct_files[0].parent
    out = [str(ct_dir)]
    for extra in (study.seg_file, study.rtstruct_file):
        if extra is not None and extra.parent != ct_dir:
            out.append(str(extra))
    return out


def _run(study, store: Store, **kw):
    os.environ[SECRET_ENV] = SECRET
    return ingest(
        sources_of(study),
        store=store,
        site="test-site",
        collection="lung-ct",
        labels=[str(study.nifti_file)] if study.nifti_file else [],
        scheduler=kw.pop("scheduler", "synchronous"),
        options=kw.pop("options", OPTIONS),
        **kw,
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    return float(2 * inter / max(a.sum() + b.sum(), 1))


def test_synthetic_study_end_to_end(study, tmp_path) -> None:
    store = open_store(tmp_path / "store")
    summary = _run(study, store)
    assert len(summary.written) == 1 and not summary.failed
    assert summary.quarantined == []
    (path,) = summary.images
    parts = path.split("/")
    assert parts[0] == "lung-ct" and path.endswith(".ome.zarr") and len(parts) == 4
    image = open_image(store, path)
    meta = image.metadata
    assert meta.shape == study.truth_labels.shape
    np.testing.assert_allclose(meta.spacing, study.spacing, atol=1e-4)
    np.testing.assert_allclose(meta.origin, study.origin, atol=1e-4)
    # every slice equals its source file, in patient order (pydicom alone gives the truth)
    assert_images_match_sources(store, summary.images, source_series(study.ct_files))
    # three label images: SEG, RTSTRUCT, NIfTI, each on the CT grid
    assert sorted(n.split("-")[0] for n in meta.labels) == ["nifti", "rtstruct", "seg"]
    truth = study.truth_labels
    for name in meta.labels:
        label = image.label(name)
        mask = label.read(0)
        assert mask.shape == truth.shape
        assert label.info.names, name
        for value, label_name in label.info.names.items():
            # where labels overlap the later one wins, so each value is its own region
            # (NIfTI masks carry bare values: compare value to value)
            truth_value = value if name.startswith("nifti") else 2 if "tumour" in label_name else 1
            expected = truth == truth_value
            assert _dice(mask == value, expected) >= 0.99, (name, label_name)
    # staging records: one series row, one image row per slice, annotations with boxes
    series = records.read_table(store, "series", "lung-ct").to_pylist()
    images = records.read_table(store, "images", "lung-ct").to_pylist()
    notes = records.read_table(store, "annotations", "lung-ct").to_pylist()
    assert len(series) == 1 and series[0]["image_path"] == path
    assert series[0]["modality"] == "CT" and series[0]["size_z"] == truth.shape[0]
    assert len(images) == truth.shape[0]
    assert len({r["image_id"] for r in images}) == len(images)
    assert sorted(r["z_index"] for r in images) == list(range(truth.shape[0]))
    tumour_slices = {int(z) for z in np.nonzero((truth == 2).any(axis=(1, 2)))[0]}
    seg_tumour = [r for r in notes if r["source"] == "SEG" and "tumour" in r["label_name"]]
    assert {r["z_index"] for r in seg_tumour} == tumour_slices
    for r in seg_tumour:
        plane = truth[r["z_index"]] == 2
        ys, xs = np.nonzero(plane)
        assert (r["bbox_y0"], r["bbox_x0"], r["bbox_y1"], r["bbox_x1"]) == (
            ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        )  # fmt: skip
        assert r["voxel_count"] == int(plane.sum())
    annotated = {r["image_id"] for r in images if r["annotated"]}
    assert annotated == {r["image_id"] for r in notes}
    # the journal knows the series
    assert journal.finished(store, "lung-ct") == [series[0]["series_id"]]


def test_rerun_skips_and_duplicates_nothing(study, tmp_path) -> None:
    store = open_store(tmp_path / "store")
    first = _run(study, store)
    keys_before = {k: store.read_bytes(k) for k in store.list()}
    second = _run(study, store)
    assert len(second.written) == 0 and len(second.skipped) == 1
    assert second.images == first.images
    keys_after = {k: store.read_bytes(k) for k in store.list()}
    assert keys_after == keys_before
    assert len(records.read_table(store, "images", "lung-ct")) == study.truth_labels.shape[0]


def test_same_key_same_ids_other_key_other_ids(study, tmp_path, monkeypatch) -> None:
    a = _run(study, open_store(tmp_path / "a"))
    b = _run(study, open_store(tmp_path / "b"))
    assert a.images == b.images
    monkeypatch.setenv("ATLAS_OTHER_SECRET", "another-site-key-0123456789abcdef")
    c = _run(
        study, open_store(tmp_path / "c"), options=IngestOptions(secret_env="ATLAS_OTHER_SECRET")
    )
    assert c.images != a.images


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def test_no_canary_in_any_byte_written(study, tmp_path, capfd) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    store_dir = tmp_path / "store"
    report = tmp_path / "report.json"
    args = ["ingest", *sources_of(study), "--site", "test-site", "--collection", "lung-ct",
            "--store", str(store_dir), "--labels", str(study.nifti_file),
            "--secret-env", SECRET_ENV, "--report", str(report)]  # fmt: skip
    result = CliRunner().invoke(app, args, env={SECRET_ENV: SECRET})
    assert result.exit_code == 0, result.output
    captured = capfd.readouterr()
    texts = [result.output, captured.out, captured.err, report.read_text()]
    blobs = _all_bytes(store_dir)
    assert blobs, "nothing was written"
    # decode the staging Parquet tables to text too (compressed bytes could hide a value)
    import pyarrow.parquet as pq

    for p, raw in blobs:
        if p.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(io.BytesIO(raw)).to_pylist(), default=str))
    canaries = [c for c in study.canaries if len(c) >= 6]
    assert len(canaries) >= 10, "the synthetic study should carry many canaries"
    for canary in canaries:
        needle = canary.encode()
        for p, raw in blobs:
            assert needle not in raw, f"canary found in {p.relative_to(store_dir)}"
        for text in texts:
            assert canary not in text
    assert SECRET not in "".join(texts)
    assert all(SECRET.encode() not in raw for _, raw in blobs)


def test_distributed_scheduler(study, tmp_path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:  # fmt: skip
        summary = _run(study, open_store(tmp_path / "store"), scheduler=cluster.scheduler_address)
    assert len(summary.written) == 1
    image = open_image(open_store(tmp_path / "store"), summary.images[0])
    assert image.metadata.shape == study.truth_labels.shape


def test_local_cluster_default(study, tmp_path) -> None:
    summary = _run(study, open_store(tmp_path / "store"), scheduler=None, workers=2)
    assert len(summary.written) == 1 and not summary.quarantined


def _hashes(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_bad_inputs_are_quarantined_and_never_modified(study, tmp_path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not a dicom file")
    ct = Path(get_testdata_file("CT_small.dcm"))
    (bad / "truncated.dcm").write_bytes(ct.read_bytes()[:300])
    with zipfile.ZipFile(bad / "archive.zip", "w") as zf:
        zf.writestr("inside/readme.md", "hello")
        zf.writestr("inside/ct.dcm", ct.read_bytes())
    us = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))  # pydicom-data
    if "BurnedInAnnotation" in us:
        del us.BurnedInAnnotation
    us.save_as(bad / "ultrasound.dcm")
    inputs = [p for p in bad.rglob("*") if p.is_file()]
    before = _hashes(inputs)
    store = open_store(tmp_path / "store")
    summary = ingest([str(bad)], store=store, site="test-site", collection="misc",
                     scheduler="synchronous", options=OPTIONS)  # fmt: skip
    reasons = {Path(q.ref.display).name if q.ref.member is None else q.ref.member: q.reason
               for q in summary.quarantined}  # fmt: skip
    assert "not a DICOM" in reasons["notes.txt"]
    assert "truncated.dcm" in reasons
    assert "inside/readme.md" in reasons
    assert "burned-in" in reasons["ultrasound.dcm"]
    assert len(summary.written) == 1  # the CT inside the zip
    assert _hashes(inputs) == before
    report = write_report(summary, tmp_path / "report.json")
    data = json.loads(report.read_text())
    assert data["files_quarantined"] == len(summary.quarantined) >= 3
    assert all(q["reason"] for q in data["quarantined"])


def test_strict_exit_code(tmp_path) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    src = tmp_path / "src"
    src.mkdir()
    (src / "junk.bin").write_bytes(b"\x00" * 200)
    base = ["ingest", str(src), "--site", "s", "--collection", "c", "--store",
            str(tmp_path / "store"), "--secret-env", SECRET_ENV,
            "--report", str(tmp_path / "r.json")]  # fmt: skip
    env = {SECRET_ENV: SECRET}
    assert CliRunner().invoke(app, base, env=env).exit_code == 0
    strict = CliRunner().invoke(app, [*base, "--strict"], env=env)
    assert strict.exit_code == 1


def test_missing_secret_is_a_clear_error(tmp_path) -> None:
    from atlas.errors import ConfigError

    os.environ.pop("ATLAS_NO_SUCH_SECRET", None)
    with pytest.raises(ConfigError, match="ATLAS_NO_SUCH_SECRET"):
        ingest(
            [str(tmp_path)],
            store=open_store(tmp_path / "s"),
            site="s",
            collection="c",
            scheduler="synchronous",
            options=IngestOptions(secret_env="ATLAS_NO_SUCH_SECRET"),
        )


def test_real_ct_values_equal_pydicom(tmp_path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut

    ct = get_testdata_file("CT_small.dcm")
    store = open_store(tmp_path / "store")
    summary = ingest([ct], store=store, site="s", collection="real", scheduler="synchronous",
                     options=OPTIONS)  # fmt: skip
    assert len(summary.written) == 1
    image = open_image(store, summary.images[0])
    ds = pydicom.dcmread(ct)
    expected = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(image.read(0)[0], expected)
    np.testing.assert_allclose(
        image.metadata.spacing[1:], [float(v) for v in ds.PixelSpacing], atol=1e-4
    )
    header = image.metadata.extra["dicom"]
    assert header["00100020"]["Value"][0] != ds.PatientID
    assert str(ds.StudyInstanceUID) not in json.dumps(header)


def test_real_series_every_slice_in_patient_order(tmp_path) -> None:
    """pydicom's real CT series (5 and 4 slices, files not in slice order, one with a gap;
    two orientations in one series), MR series (several orientations; secondary captures let
    through as reviewed) and CR images, ingested and compared slice by slice."""
    from dataclasses import replace

    from pydicom.data import get_testdata_file

    root = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    folders = [root / "98892001", root / "77654033", root / "98892003"]
    sources = source_series(folders)
    assert sum(s.pixels.shape[0] > 1 for s in sources) >= 2
    assert any(  # the files are not already in patient order: sorting matters
        [f.name for f in s.files] != sorted(f.name for f in s.files) for s in sources
    )
    store = open_store(tmp_path / "store")
    summary = ingest([str(f) for f in folders], store=store, site="s", collection="real",
                     scheduler="synchronous",
                     options=replace(OPTIONS, allow_burned_in=True))  # fmt: skip
    assert not summary.quarantined
    assert_images_match_sources(store, summary.images, sources)


WRITER = f"""
import os, sys
from atlas.ingest.driver import ingest
from atlas.ingest.series import IngestOptions
from atlas.storage import open_store
summary = ingest(sys.argv[2:], store=open_store(sys.argv[1]), site="test-site",
                 collection="killed", scheduler="synchronous",
                 options=IngestOptions(secret_env={SECRET_ENV!r}))
print("written", len(summary.written), "skipped", len(summary.skipped))
"""


@pytest.mark.slow
def test_sigkill_mid_ingest_then_rerun_completes(tmp_path) -> None:
    from atlas.testing.synthetic import make_study

    dirs = []
    for seed in range(3):
        s = make_study(tmp_path / f"study{seed}", shape=(24, 96, 96), seed=10 + seed,
                       with_seg=False, with_rtstruct=False, with_nifti=False)  # fmt: skip
        dirs.append(str(s.ct_files[0].parent))
    store_dir = tmp_path / "store"
    env = {**os.environ, SECRET_ENV: SECRET}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store_dir), *dirs], env=env)
    journal_dir = store_dir / "_journal" / "killed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal_dir.exists() and len(list(journal_dir.iterdir())) >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    store = open_store(store_dir)
    done_before = len(journal.finished(store, "killed"))
    assert done_before < 3, "the writer finished before it could be killed; enlarge the studies"
    # readers never see a half-written image: anything not journaled is incomplete or absent
    out = subprocess.run([sys.executable, "-c", WRITER, str(store_dir), *dirs], env=env,
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    assert f"written {3 - done_before} skipped {done_before}" in out.stdout
    assert len(journal.finished(store, "killed")) == 3
    assert find_incomplete(store, "killed") == []
    series = records.read_table(store, "series", "killed").to_pylist()
    images = records.read_table(store, "images", "killed").to_pylist()
    assert len(series) == 3
    assert len(images) == len({r["image_id"] for r in images}) == 3 * 24


def test_bench_ingest_smoke(tmp_path) -> None:
    from atlas.bench.ingest import run

    paths = run(tmp_path, quick=True)
    report = json.loads(paths["json"].read_text())
    names = [r["pipeline"] for r in report["rows"]]
    assert any(n.startswith("atlas ingest (") for n in names)
    assert any(n.startswith("baseline") for n in names)
    for row in report["rows"]:
        assert row["seconds"] > 0 and row["slices/s"] > 0
    assert report["rows"][0]["peak RSS MB"] > 0
    assert paths["png"].stat().st_size > 1000


def test_labels_that_fit_nothing_are_reported(study, tmp_path) -> None:
    import nibabel as nib

    # a NIfTI mask shifted by 5 mm, and a SEG of another study (it references no input series)
    img = nib.load(study.nifti_file)
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0
    bad_mask = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), bad_mask)
    import data_store

    # a SEG of another study: pydicom-data's 3-frame liver.dcm (the package keeps its files in
    # its data/ folder)
    other_seg = Path(data_store.__file__).parent / "data" / "liver.dcm"
    assert other_seg.is_file(), other_seg
    store = open_store(tmp_path / "store")
    summary = ingest(
        [str(study.ct_files[0].parent), str(other_seg)],
        store=store, site="s", collection="c", labels=[str(bad_mask)],
        scheduler="synchronous", options=OPTIONS,
    )  # fmt: skip
    assert len(summary.written) == 1
    reasons = {Path(q.ref.path).name: q.reason for q in summary.quarantined}
    assert "does not match any image" in reasons["shifted.nii.gz"]
    assert "references no series" in reasons[other_seg.name]
    assert open_image(store, summary.images[0]).label_names == ()


def test_nifti_image_source_and_rerun(tmp_path) -> None:
    import nibabel as nib

    data = np.arange(8 * 16 * 16, dtype=np.int16).reshape(16, 16, 8)  # NIfTI order x, y, z
    path = tmp_path / "patient-name-in-file.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.0, 1.0])), path)
    store = open_store(tmp_path / "store")
    first = ingest([str(path)], store=store, site="s", collection="c",
                   scheduler="synchronous", options=OPTIONS)  # fmt: skip
    assert len(first.written) == 1 and first.written[0].n_images == 8
    image = open_image(store, first.images[0])
    np.testing.assert_array_equal(image.read(0), np.transpose(data, (2, 1, 0)))
    assert "patient-name-in-file" not in first.images[0]
    again = ingest([str(path)], store=store, site="s", collection="c",
                   scheduler="synchronous", options=OPTIONS)  # fmt: skip
    assert [o.status for o in again.skipped] == ["skipped"] and again.images == first.images
    assert again.skipped[0].n_images == 8
