"""Geometry that Atlas writes: every slice where its Image Position (Patient) says, invalid
geometry values quarantined (never a silent default), and the OME transform and ``atlas``
affine equal to what SimpleITK reads from the same files.

Series are built by copying pydicom's ``CT_small.dcm`` with chosen positions and orientations,
or from the synthetic study generator; every ingest runs in-process into a temporary folder.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")

from pydicom.data import get_testdata_file  # noqa: E402
from tests.ingest.geometry_series import (  # noqa: E402
    DATA_STORE,
    TOL_MM,
    Series,
    assert_every_slice_at_its_ipp,
    assert_no_nonfinite_json,
    ingest_series,
)

from atlas import records  # noqa: E402
from atlas.ingest.driver import write_report  # noqa: E402
from atlas.ingest.geometry import slice_normal  # noqa: E402
from atlas.ingest.parts import regular_runs  # noqa: E402
from atlas.ome import open_image  # noqa: E402
from atlas.storage import open_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# ------------------------------------------------------------------------------------------
# 1. slices are never misplaced: gaps and varying spacing split into evenly spaced parts


def test_regular_runs() -> None:
    assert regular_runs([0.0, 1.0, 2.0, 3.0]) == [(0, 4)]
    assert regular_runs([0.0, 1.0, 2.0, 3.0, 203.0, 204.0]) == [(0, 4), (4, 6)]
    assert regular_runs([0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0]) == [(0, 4), (4, 7)]
    # an isolated first slice before a gap stands alone (not paired across the gap)
    assert regular_runs([-99.48, 103.02, 104.27, 105.52]) == [(0, 1), (1, 4)]
    assert regular_runs([0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 20.0]) == [(0, 4), (4, 7), (7, 8)]
    # jitter well within a tenth of the step stays one run; a drift beyond it does not
    assert regular_runs([0.0, 1.02, 1.98, 3.01, 4.0]) == [(0, 5)]
    assert len(regular_runs([0.0, 1.0, 2.1, 3.3, 4.6, 6.0])) > 1
    for positions in ([0.0, 1.0, 4.0, 4.5, 9.0], list(np.cumsum(np.arange(1.0, 9.0)))):
        runs = regular_runs(positions)
        assert runs[0][0] == 0 and runs[-1][1] == len(positions)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))


@pytest.mark.parametrize(
    ("name", "z"),
    [
        # a 200 mm gap (missing instances) in a 5 mm series, as in the real file of the report
        ("gap", [0.0, 5.0, 10.0, 15.0, 215.0, 220.0, 225.0]),
        # one missing slice
        ("one-missing", [0.0, 3.0, 6.0, 12.0, 15.0, 18.0]),
        # the spacing changes part-way (1 mm, then 2 mm), and an isolated last slice
        ("varying", [0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 9.0, 20.0]),
    ],
)
def test_every_written_slice_is_at_its_image_position(
    tmp_path: Path, name: str, z: list[float]
) -> None:
    series = Series(tmp_path / "src")
    for k in np.random.default_rng(len(z)).permutation(len(z)):  # files in no order
        series.write((-30.0, 12.5, z[int(k)]))
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined and len(summary.written) == 1
    n_images = assert_every_slice_at_its_ipp(store, series.positions)
    assert n_images > 1  # split, not one volume with one z step
    # the parts say what they are: part k of n, which original slices, why
    rows = records.read_table(store, "series").to_pylist()
    assert sorted(r["part"] for r in rows) == list(range(1, n_images + 1))
    assert {r["parts"] for r in rows} == {n_images}
    assert all(r["regularly_spaced"] for r in rows)
    covered: list[int] = []
    for r in rows:
        meta = open_image(store, r["image_path"]).metadata
        part = meta.extra["part"]
        assert (part["index"], part["count"]) == (r["part"], n_images)
        assert part["reason"]
        covered.extend(range(part["first_slice"], part["last_slice"] + 1))
        assert part["last_slice"] - part["first_slice"] + 1 == meta.shape[0]
    assert sorted(covered) == list(range(len(z)))  # every slice once, none invented
    assert_no_nonfinite_json(tmp_path / "store")


def test_labels_follow_their_slices_into_the_parts(tmp_path: Path) -> None:
    """An RTSTRUCT drawn on a series with missing slices: each part's mask is the truth at the
    original positions of that part's slices."""
    from atlas.testing.synthetic import make_study

    study = make_study(
        tmp_path / "study", shape=(16, 48, 48), seed=4, with_seg=False, with_nifti=False
    )
    assert study.rtstruct_file is not None
    ordered = sorted(
        study.ct_files,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    missing = {5, 6}
    for k in missing:
        ordered[k].unlink()
    kept = [k for k in range(len(ordered)) if k not in missing]
    summary, store = ingest_series([ordered[0].parent, study.rtstruct_file], tmp_path / "store")
    assert not summary.quarantined
    (written,) = summary.written
    assert len(written.images) == 2
    truth = study.truth_labels
    for path in written.images:
        img = open_image(store, path)
        part = img.metadata.extra["part"]
        (name,) = img.label_names
        mask = np.asarray(img.label(name).read(0))
        original = kept[part["first_slice"] : part["last_slice"] + 1]
        np.testing.assert_array_equal(mask > 0, truth[original] > 0)


def test_multiframe_gap_is_split_too(tmp_path: Path) -> None:
    """A multi-frame RT dose whose Grid Frame Offset Vector jumps: every frame in its place."""
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    offsets = [5.0 * k for k in range(10)] + [5.0 * k + 100.0 for k in range(10, 15)]
    ds.GridFrameOffsetVector = offsets
    (tmp_path / "src").mkdir()
    ds.save_as(tmp_path / "src" / "dose.dcm")
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    normal = slice_normal([float(v) for v in ds.ImageOrientationPatient])
    rows = records.read_table(store, "images").to_pylist()
    assert len(rows) == 15 and len({r["image_path"] for r in rows}) == 2
    for row in rows:
        affine = np.asarray(open_image(store, row["image_path"]).metadata.affine)
        lps = affine @ np.array([row["z_index"], 0.0, 0.0, 1.0])
        expected = ipp + offsets[row["frame"] - 1] * normal
        np.testing.assert_allclose(lps[:3], expected, atol=TOL_MM)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ImagePositionPatient", ["1", "2"]),
        ("ImageOrientationPatient", ["1", "0", "0", "0", "inf", "0"]),
    ],
)
def test_multiframe_invalid_geometry_is_quarantined(
    tmp_path: Path, keyword: str, value: list[str]
) -> None:
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    setattr(ds, keyword, value)
    (tmp_path / "src").mkdir()
    ds.save_as(tmp_path / "src" / "dose.dcm")
    summary, _ = ingest_series([tmp_path / "src"], tmp_path / "store")
    (q,) = summary.quarantined
    assert q.reason.startswith("invalid Image") and "internal error" not in q.reason
    assert not summary.written


DICOMDIR_TESTS = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests"


def test_real_series_with_a_200_mm_gap(tmp_path: Path) -> None:
    """pydicom's dicomdirtests CT2: 4 slices at z = -99.48, 103.02, 104.27, 105.52 mm."""
    folder = DICOMDIR_TESTS / "77654033" / "CT2"
    originals = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        originals[str(ds.SOPInstanceUID)] = tuple(float(v) for v in ds.ImagePositionPatient)
    summary, store = ingest_series([folder], tmp_path / "store")
    assert not summary.quarantined
    assert assert_every_slice_at_its_ipp(store, originals) == 2
    sizes = sorted(r["size_z"] for r in records.read_table(store, "series").to_pylist())
    assert sizes == [1, 3]
    # the evenly spaced real series beside it stays one volume, also as SimpleITK reads it
    ct5n = DICOMDIR_TESTS / "98892001" / "CT5N"
    out = _compare_with_sitk(ct5n, tmp_path / "ct5n", multi_slice=True)
    assert out["meta"].shape[0] == 5


def test_regular_series_stays_one_volume(tmp_path: Path) -> None:
    series = Series(tmp_path / "src")
    iop = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: slices along +x (L)
    for k in (3, 1, 0, 2, 4):
        series.write((1.25 * k - 10.0, -5.0, 40.0), iop=iop)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    assert assert_every_slice_at_its_ipp(store, series.positions) == 1
    (row,) = records.read_table(store, "series").to_pylist()
    assert (row["part"], row["parts"]) == (1, 1)
    assert math.isclose(row["spacing_z"], 1.25, abs_tol=1e-5)
    assert open_image(store, row["image_path"]).metadata.extra["part"] is None


# ------------------------------------------------------------------------------------------
# 2. invalid geometry values: quarantined with a reason, never a silent default


BAD_VALUES = [
    ("PixelSpacing", ["-0.5", "0.5"], "Pixel Spacing", "positive"),
    ("PixelSpacing", ["0", "0.5"], "Pixel Spacing", "positive"),
    ("PixelSpacing", ["NaN", "0.5"], "Pixel Spacing", "finite"),
    ("PixelSpacing", ["0.5", "inf"], "Pixel Spacing", "finite"),
    ("PixelSpacing", ["0.5"], "Pixel Spacing", "needs 2"),
    ("ImagePositionPatient", ["1", "2"], "Image Position (Patient)", "needs 3"),
    ("ImagePositionPatient", ["1", "NaN", "3"], "Image Position (Patient)", "finite"),
    ("ImageOrientationPatient", ["1", "0", "0", "0", "NaN", "0"], "Orientation", "finite"),
    ("ImageOrientationPatient", ["1", "0", "0", "0", "-inf", "0"], "Orientation", "finite"),
    ("ImageOrientationPatient", ["1", "0", "0", "0", "1"], "Orientation", "needs 6"),
    ("ImageOrientationPatient", ["1", "0", "0", "1", "0", "0"], "Orientation", "perpendicular"),
]


@pytest.mark.parametrize(("keyword", "value", "attribute", "why"), BAD_VALUES)
def test_invalid_geometry_value_is_quarantined_with_a_reason(
    tmp_path: Path, keyword: str, value: list[str], attribute: str, why: str
) -> None:
    series = Series(tmp_path / "src")
    bad = None
    for k in range(5):
        path = series.write((0.0, 0.0, 2.0 * k), edit={keyword: value} if k == 2 else None)
        bad = path if k == 2 else bad
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    reasons = {Path(q.ref.path): q.reason for q in summary.quarantined}
    assert set(reasons) == {bad}
    assert attribute in reasons[bad] and why in reasons[bad]
    assert "internal error" not in reasons[bad]
    # the report says it too; the other slices are written, each where its IPP says
    report = json.loads(write_report(summary, tmp_path / "report.json").read_text())
    assert any(attribute in q["reason"] for q in report["quarantined"])
    good = {u: p for u, p in series.positions.items() if p != (0.0, 0.0, 4.0)}
    if keyword != "ImagePositionPatient":
        assert_every_slice_at_its_ipp(store, good)
    assert_no_nonfinite_json(tmp_path / "store")


@pytest.mark.parametrize("thickness", ["NaN", "inf", "-1", "0"])
def test_invalid_slice_thickness_is_noted_not_defaulted(tmp_path: Path, thickness: str) -> None:
    series = Series(tmp_path / "src")
    series.write((0.0, 0.0, 7.0), edit={"SliceThickness": thickness})
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined and len(summary.written) == 1
    (row,) = records.read_table(store, "series").to_pylist()
    assert row["slice_thickness"] is None  # not NaN, not a made-up value
    meta = open_image(store, row["image_path"]).metadata
    note = meta.extra["spacing_note"] or ""
    assert "invalid Slice Thickness" in note and "ignored" in note
    # without Spacing Between Slices, the single slice's z spacing is a stated placeholder
    path = series.write((0.0, 0.0, 7.0), edit={"SliceThickness": thickness})
    series.folder.joinpath("slice000.dcm").unlink()
    ds = pydicom.dcmread(path)
    del ds.SpacingBetweenSlices
    ds.save_as(path)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store2")
    (row,) = records.read_table(store, "series").to_pylist()
    note = open_image(store, row["image_path"]).metadata.extra["spacing_note"] or ""
    assert "placeholder" in note and row["slice_thickness"] is None
    assert_no_nonfinite_json(tmp_path / "store")


def test_invalid_spacing_of_an_image_without_geometry_is_noted(tmp_path: Path) -> None:
    """Without patient geometry a spacing places nothing: placeholder 1.0 mm and a note.

    pydicom-data's RG1_UNCR.dcm is a real CR whose Pixel Spacing is 0\\0."""
    real = DATA_STORE / "RG1_UNCR.dcm"
    assert [float(v) for v in pydicom.dcmread(real, stop_before_pixels=True).PixelSpacing] == [
        0.0,
        0.0,
    ]
    series = Series(tmp_path / "src")
    series.write(
        None,
        iop=None,
        edit={
            "ImagePositionPatient": None,
            "ImageOrientationPatient": None,
            "PixelSpacing": ["NaN", "0.5"],
        },
    )
    for source, store_dir in ((real, "real"), (tmp_path / "src", "crafted")):
        summary, store = ingest_series([source], tmp_path / store_dir)
        assert not summary.quarantined and len(summary.written) == 1
        (row,) = records.read_table(store, "series").to_pylist()
        assert (row["spacing_y"], row["spacing_x"]) == (1.0, 1.0)
        note = open_image(store, row["image_path"]).metadata.extra["spacing_note"] or ""
        assert "invalid Pixel Spacing" in note and "ignored" in note and "placeholder" in note
        assert_no_nonfinite_json(tmp_path / store_dir)


def test_missing_pixel_spacing_is_noted(tmp_path: Path) -> None:
    series = Series(tmp_path / "src")
    for k in range(3):
        series.write((0.0, 0.0, 2.0 * k), edit={"PixelSpacing": None})
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    (row,) = records.read_table(store, "series").to_pylist()
    note = open_image(store, row["image_path"]).metadata.extra["spacing_note"]
    assert note and "Pixel Spacing" in note and "placeholder" in note


# ------------------------------------------------------------------------------------------
# 3. the OME transform and the atlas affine agree with SimpleITK's reading of the same files
#
# Both use LPS. SimpleITK indexes (x, y, z) = (column, row, slice) and its direction matrix
# has one column per index axis; Atlas indexes (z, y, x), so Atlas's spacing is SimpleITK's
# reversed and Atlas's direction is SimpleITK's with its columns reversed. The origin (LPS x,
# y, z of voxel 0's centre) is the same vector in both.


def _sitk_read(source: Path) -> Any:
    import SimpleITK as sitk  # the test extra installs it: a missing one fails, never skips

    if source.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(source)))
        return reader.Execute()
    return sitk.ReadImage(str(source))


def _compare_with_sitk(source: Path, tmp_path: Path, *, multi_slice: bool) -> dict[str, Any]:
    """Ingest ``source``; assert origin/spacing/direction/OME transform match SimpleITK."""
    itk = _sitk_read(source)
    summary, store = ingest_series([source], tmp_path / "store")
    assert not summary.quarantined and len(summary.written) == 1
    (path,) = summary.written[0].images
    meta = open_image(store, path).metadata
    itk_origin = np.asarray(itk.GetOrigin())
    itk_spacing = np.asarray(itk.GetSpacing())
    itk_direction = np.asarray(itk.GetDirection()).reshape(3, 3)
    size_xyz = itk.GetSize()
    assert tuple(meta.shape[-3:]) == tuple(reversed(size_xyz))
    # the atlas attribute: origin, spacing, direction, affine
    np.testing.assert_allclose(meta.origin, itk_origin, atol=TOL_MM)
    np.testing.assert_allclose(meta.direction[:, ::-1], itk_direction, atol=1e-6)
    n_spacing = 3 if multi_slice else 2  # one slice: its z spacing is nominal in both
    np.testing.assert_allclose(
        np.asarray(meta.spacing)[::-1][:n_spacing], itk_spacing[:n_spacing], rtol=1e-6
    )
    affine = np.asarray(meta.affine)
    corners = itertools.product(*[(0, n - 1) for n in size_xyz])
    for ix, iy, iz in corners:
        expected = itk.TransformIndexToPhysicalPoint((int(ix), int(iy), int(iz)))
        got = affine @ np.array([iz, iy, ix, 1.0])
        np.testing.assert_allclose(got[:3], expected, atol=TOL_MM)
    # the OME transform of level 0: scale is the spacing; translation is voxel 0's patient
    # position in the world axes z, y, x = S, P, L (SimpleITK's origin, reversed)
    level0 = meta.levels[0]
    scale, translation = np.asarray(level0.scale[-3:]), np.asarray(level0.translation[-3:])
    np.testing.assert_allclose(scale, meta.spacing, rtol=1e-9)
    np.testing.assert_allclose(translation, itk_origin[::-1], atol=TOL_MM)
    # where the array axes run along +S, +P, +L, every voxel's OME position is its patient one
    if np.allclose(itk_direction, np.eye(3)):
        for ix, iy, iz in itertools.product(*[(0, n - 1) for n in size_xyz]):
            ome = translation + scale * np.array([iz, iy, ix])
            point = itk.TransformIndexToPhysicalPoint((int(ix), int(iy), int(iz)))
            np.testing.assert_allclose(ome[::-1], point, atol=TOL_MM)
    assert_no_nonfinite_json(tmp_path / "store")
    return {"meta": meta, "itk_direction": itk_direction}


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_synthetic_ct_series_matches_simpleitk(tmp_path: Path, oblique: bool) -> None:
    from atlas.testing.synthetic import make_study

    study = make_study(
        tmp_path / "study",
        shape=(5 if oblique else 6, 32, 32),
        seed=6 if oblique else 5,
        oblique=oblique,
        with_seg=False,
        with_rtstruct=False,
        with_nifti=False,
    )
    out = _compare_with_sitk(study.ct_files[0].parent, tmp_path, multi_slice=True)
    np.testing.assert_allclose(out["meta"].origin, study.origin, atol=TOL_MM)
    axis_aligned = np.allclose(np.abs(out["itk_direction"]), np.eye(3), atol=0.05)
    assert axis_aligned != oblique


@pytest.mark.parametrize(
    "iop",
    [
        (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),  # x and y flipped (feet-first-like), normal +S
        (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # x flipped, normal -S (slices run down)
        (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # coronal: y runs along -S, slices along +P
    ],
    ids=["xy-flipped", "x-z-flipped", "coronal"],
)
def test_flipped_axes_series_matches_simpleitk(tmp_path: Path, iop: tuple[float, ...]) -> None:
    series = Series(tmp_path / "src")
    normal = slice_normal(iop)
    start = np.array([40.0, -60.0, 25.0])
    for k in (2, 0, 3, 1):
        series.write(tuple(start + 2.5 * k * normal), iop=iop)
    out = _compare_with_sitk(tmp_path / "src", tmp_path, multi_slice=True)
    meta = out["meta"]
    # translation is the patient position of voxel 0 (not its projection on a flipped axis)
    np.testing.assert_allclose(meta.levels[0].translation, np.asarray(meta.origin)[::-1])
    assert_every_slice_at_its_ipp(open_store(str(tmp_path / "store")), series.positions)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_real_pydicom_files_match_simpleitk(tmp_path: Path, name: str) -> None:
    path = Path(get_testdata_file(name))
    _compare_with_sitk(path, tmp_path, multi_slice=False)


def test_image_without_geometry_matches_simpleitk_and_the_default(tmp_path: Path) -> None:
    path = DATA_STORE / "RG3_UNCR.dcm"  # CR: no Image Position/Orientation, no Pixel Spacing
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "ImageOrientationPatient" not in ds and "ImagePositionPatient" not in ds
    out = _compare_with_sitk(path, tmp_path, multi_slice=False)
    meta = out["meta"]
    # the documented default: z -> S, y -> P, x -> L (atlas.ome.metadata.default_direction)
    assert meta.direction.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert meta.origin == (0.0, 0.0, 0.0)
    assert "placeholder" in (meta.extra["spacing_note"] or "")
