"""One bad label object is quarantined with a clear reason; the image and the good labels are
still written (never an "internal error" for the whole series)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from atlas.errors import InvalidInput
from atlas.ingest.driver import ingest, write_report
from atlas.ingest.labels import rtstruct_to_labels, seg_to_labels
from atlas.ingest.series import IngestOptions
from atlas.ome import open_image
from atlas.storage import open_store

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from atlas.testing.synthetic import make_study

    return make_study(tmp_path_factory.mktemp("study"), shape=(8, 32, 32), seed=4)


def _ingest(study: Any, tmp_path: Path, extra: list[Path], labels: list[Path] = ()) -> Any:
    os.environ[SECRET_ENV] = SECRET
    store = open_store(tmp_path / "store")
    summary = ingest(
        [str(study.ct_files[0].parent), *map(str, extra)],
        store=store, site="s", collection="c", labels=[str(p) for p in labels],
        scheduler="synchronous", options=IngestOptions(secret_env=SECRET_ENV),
    )  # fmt: skip
    report = json.loads(write_report(summary, tmp_path / "report.json").read_text())
    return store, summary, report


def _reason_of(report: dict[str, Any], path: Path) -> str:
    reasons = [q["reason"] for q in report["quarantined"] if q["file"] == str(path)]
    assert len(reasons) == 1, report["quarantined"]
    return reasons[0]


def _check_written(store: Any, summary: Any, report: dict[str, Any], kept: list[str]) -> None:
    assert len(summary.written) == 1 and not summary.failed
    assert all("internal error" not in q["reason"] for q in report["quarantined"])
    (path,) = summary.images
    labels = open_image(store, path).label_names
    assert sorted(n.split("-")[0] for n in labels) == sorted(kept)


@pytest.mark.parametrize("value", [b"", b"abc", b"-2"])
def test_rtstruct_with_bad_roi_number(study, tmp_path, value: bytes) -> None:
    ds = pydicom.dcmread(study.rtstruct_file)
    ds.ROIContourSequence[1].ReferencedROINumber = "77777"  # a placeholder, patched below
    bad = tmp_path / "rt.dcm"
    ds.save_as(bad)
    raw = bad.read_bytes()
    assert raw.count(b"77777 ") == 1
    bad.write_bytes(raw.replace(b"77777 ", value.ljust(6)))  # pydicom refuses to write "abc"
    with pytest.raises(InvalidInput, match="Referenced ROI Number is empty or not a positive"):
        rtstruct_to_labels(pydicom.dcmread(bad), _volume(study))
    store, summary, report = _ingest(study, tmp_path, [bad, study.seg_file])
    _check_written(store, summary, report, ["seg"])
    assert "RTSTRUCT ROI Contour item 2: Referenced ROI Number" in _reason_of(report, bad)


def test_seg_with_empty_segment_number(study, tmp_path) -> None:
    ds = pydicom.dcmread(study.seg_file)
    ds.SegmentSequence[0].SegmentNumber = None
    bad = tmp_path / "seg.dcm"
    ds.save_as(bad)
    store, summary, report = _ingest(study, tmp_path, [bad, study.rtstruct_file])
    _check_written(store, summary, report, ["rtstruct"])
    assert "SEG segment 1: Segment Number is empty" in _reason_of(report, bad)


def test_seg_frame_with_empty_referenced_segment_number(study) -> None:
    ds = pydicom.dcmread(study.seg_file)
    item = ds.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence[0]
    item.ReferencedSegmentNumber = None
    with pytest.raises(InvalidInput, match="frame 1: Referenced Segment Number is empty"):
        seg_to_labels(ds, _volume(study))


def test_truncated_seg_pixel_data(study, tmp_path) -> None:
    ds = pydicom.dcmread(study.seg_file)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    bad = tmp_path / "seg.dcm"
    ds.save_as(bad)
    store, summary, report = _ingest(study, tmp_path, [bad, study.rtstruct_file])
    _check_written(store, summary, report, ["rtstruct"])
    assert "pixel data is shorter" in _reason_of(report, bad)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_mask(study, tmp_path, suffix: str) -> None:
    img = nib.load(study.nifti_file)
    whole = tmp_path / f"whole{suffix}"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), whole)
    raw = whole.read_bytes()
    bad = tmp_path / f"mask{suffix}"
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    store, summary, report = _ingest(study, tmp_path, [study.seg_file], labels=[bad])
    _check_written(store, summary, report, ["seg"])
    assert "truncated or damaged" in _reason_of(report, bad)


def _volume(study: Any) -> Any:
    from atlas.ingest.model import Volume

    nz = study.shape[0]
    return Volume(
        pixels=np.zeros(study.shape, np.int16),
        axes="zyx",
        spacing=study.spacing,
        origin=study.origin,
        direction=study.direction,
        regularly_spaced=True,
        slice_positions=[k * study.spacing[0] for k in range(nz)],
        frames=[(uid, 1) for uid in study.sop_instance_uids],
        header=None,
        instances=[],
        frame_of_reference_uid=study.frame_of_reference_uid,
    )
