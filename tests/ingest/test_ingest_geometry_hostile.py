"""Crafted geometry an attacker (or a broken scanner) could send: every voxel still lands where
its slice's header says, or the instance is quarantined with a reason.

Uses the ``Series`` builder of ``tests/ingest/geometry_series.py`` (copies of pydicom's
``CT_small.dcm`` with chosen geometry).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tests.ingest.geometry_series import (
    AXIAL,
    SECRET_ENV,
    TOL_MM,
    Series,
    assert_every_slice_at_its_ipp,
    assert_no_nonfinite_json,
    ingest_series,
)

from atlas import records
from atlas.ome import open_image
from atlas.privacy import Deidentifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_slices_with_different_pixel_spacing_are_not_one_volume(tmp_path: Path) -> None:
    """Slices of one series whose Pixel Spacing differs: a voxel (k, i, j) of a written image
    is at IPP + i x column spacing + j x row spacing of *its own* slice's header."""
    series = Series(tmp_path / "src")
    spacing_of: dict[str, tuple[float, float]] = {}
    for k in range(6):
        ps = (0.5, 0.5) if k % 2 else (0.7, 0.6)
        series.write((-30.0, 12.5, 5.0 * k), edit={"PixelSpacing": [str(v) for v in ps]})
        spacing_of[list(series.positions)[-1]] = ps
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    deid = Deidentifier.from_env(SECRET_ENV)
    truth = {deid.uid(u): (series.positions[u], spacing_of[u]) for u in series.positions}
    rows = records.read_table(store, "images").to_pylist()
    assert {r["sop_instance_id"] for r in rows} == set(truth)
    for row in rows:
        affine = np.asarray(open_image(store, row["image_path"]).metadata.affine)
        ipp, (dy, dx) = truth[row["sop_instance_id"]]
        lps = affine @ np.array([row["z_index"], 3.0, 7.0, 1.0])
        # axial: rows run along +x (L), columns along +y (P)
        expected = np.asarray(ipp) + np.array([7.0 * dx, 3.0 * dy, 0.0])
        np.testing.assert_allclose(lps[:3], expected, atol=TOL_MM)


def _finite_rows(store: object) -> None:
    for table in ("series", "images"):
        for row in records.read_table(store, table).to_pylist():  # type: ignore[arg-type]
            for key, value in row.items():
                assert not (isinstance(value, float) and not math.isfinite(value)), (table, key)


@pytest.mark.parametrize(
    ("name", "z", "edit"),
    [
        ("positions of 1e300 mm", [1e300 * (k + 1) for k in range(4)], {}),
        ("a step of 1e9 mm", [1e9 * (k + 1) for k in range(4)], {}),
        ("a pixel spacing of 1e9 mm", [5.0 * k for k in range(4)], {"PixelSpacing": ["1e9", "1"]}),
    ],
)
def test_absurd_geometry_magnitudes_are_quarantined(
    tmp_path: Path, name: str, z: list[float], edit: dict[str, object]
) -> None:
    """Values no scanner writes (beyond a kilometre) would overflow the index's float32 columns
    to infinity: the instances are quarantined with a reason, nothing is written."""
    series = Series(tmp_path / "src")
    for value in z:
        series.write((0.0, 0.0, value), iop=AXIAL, edit=edit)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.written, name
    assert len(summary.quarantined) == len(z)
    assert all("exceeds" in q.reason and "internal" not in q.reason for q in summary.quarantined)
    _finite_rows(store)
    assert_no_nonfinite_json(tmp_path / "store")


def test_absurd_slice_thickness_is_ignored_not_infinite(tmp_path: Path) -> None:
    series = Series(tmp_path / "src")
    series.write((0.0, 0.0, 0.0), edit={"SliceThickness": "1e300"})
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert len(summary.written) == 1
    _finite_rows(store)
    (row,) = records.read_table(store, "series").to_pylist()
    assert row["slice_thickness"] is None


def test_only_the_slices_beyond_the_bound_are_quarantined(tmp_path: Path) -> None:
    """A series with two slices a kilometre away: those two are quarantined, the rest is
    written where their Image Positions say."""
    series = Series(tmp_path / "src")
    for value in (0.0, 5.0, 10.0, 15.0, 2e6, 2e6 + 5.0):
        series.write((0.0, 0.0, value))
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert len(summary.quarantined) == 2
    assert all("exceeds" in q.reason for q in summary.quarantined)
    near = {u: p for u, p in series.positions.items() if p[2] < 1e6}
    assert assert_every_slice_at_its_ipp(store, near) == 1
    _finite_rows(store)


@pytest.mark.parametrize(
    "iop",
    [
        (1.0004, 0.0, 0.0, 0.0, 1.0, 0.0),
        (1.0009, 0.0, 0.0, 0.0, 1.0, 0.0),
        (1.0, 0.0, 0.0, 0.0, 0.9991, 0.0),
        (1.0, 0.0, 0.0, 0.0009, 1.0, 0.0),
        (1.0, 0.0, 0.0, 0.002, 1.0, 0.0),
    ],
)
def test_nearly_orthonormal_orientation_is_written_or_quarantined(
    tmp_path: Path, iop: tuple[float, ...]
) -> None:
    """Direction cosines a little off unit length or perpendicular: the series is written with
    every slice in place, or quarantined for its orientation; never an internal error."""
    series = Series(tmp_path / "src")
    for k in range(4):
        series.write((0.0, 0.0, 5.0 * k), iop=iop)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    for q in summary.quarantined:
        assert q.reason.startswith("invalid Image Orientation (Patient)"), q.reason
    if summary.written:
        assert not summary.quarantined
        assert_every_slice_at_its_ipp(store, series.positions)
    else:
        assert len(summary.quarantined) == 4


def _dose(folder: Path, offsets: list[float] | None) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    if offsets is None:
        del ds.GridFrameOffsetVector
    else:
        ds.GridFrameOffsetVector = offsets
    folder.mkdir()
    ds.save_as(folder / "dose.dcm")


@pytest.mark.parametrize(
    "offsets",
    [[5.0 * k for k in range(13)], [5.0 * k for k in range(14)] + [math.nan]],
    ids=["13 offsets for 15 frames", "a NaN offset"],
)
def test_invalid_grid_frame_offsets_are_quarantined(tmp_path: Path, offsets: list[float]) -> None:
    """An RT dose whose Grid Frame Offset Vector cannot place its 15 frames: quarantined with a
    reason naming it (frames were placed 1 mm apart without a word, or blamed on the Image
    Position)."""
    _dose(tmp_path / "src", offsets)
    summary, _ = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.written
    (q,) = summary.quarantined
    assert q.reason.startswith("invalid Grid Frame Offset Vector"), q.reason


def test_frames_without_offsets_or_thickness_get_a_placeholder_note(tmp_path: Path) -> None:
    _dose(tmp_path / "src", None)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    (row,) = records.read_table(store, "series").to_pylist()
    note = open_image(store, row["image_path"]).metadata.extra["spacing_note"]
    assert "placeholder" in (note or ""), note


def test_enhanced_frames_with_different_pixel_spacing_are_quarantined(tmp_path: Path) -> None:
    """An enhanced CT whose per-frame Pixel Measures differ: one affine cannot place both frames
    (the first frame's spacing was used for all of them)."""
    import copy

    import pydicom
    from tests.ingest.geometry_series import DATA_STORE

    ds = pydicom.dcmread(DATA_STORE / "eCT_Supplemental.dcm")
    shared = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        measures = copy.deepcopy(shared)
        measures.PixelSpacing = ["0.5", "0.5"] if f % 2 else ["0.9", "0.9"]
        item.PixelMeasuresSequence = [measures]
    (tmp_path / "src").mkdir()
    ds.save_as(tmp_path / "src" / "ect.dcm")
    summary, _ = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.written
    (q,) = summary.quarantined
    assert "different pixel spacings" in q.reason, q.reason
