"""Gantry tilt: a stack whose slice positions step along a vector that is not the slice normal
is written with a sheared ``atlas.affine`` that places every voxel of every slice at its
patient position (docs/decisions/0027-gantry-tilt-sheared-affine.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from tests.ingest.geometry_series import SECRET_ENV, ingest_series

from atlas import records
from atlas.ome import open_image
from atlas.privacy import Deidentifier
from atlas.testing.synthetic import make_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TILT_DEG = 15.0
SPACING = (2.0, 0.8, 0.7)


def _study(folder: Path, tilt_deg: float) -> tuple[object, dict[str, np.ndarray]]:
    """A small synthetic CT + RTSTRUCT whose slice k (and its contours) is shifted by
    ``k * spacing_z * tan(tilt)`` along the column direction; returns the study and the
    Image Position (Patient) of each original SOP Instance UID."""
    study = make_study(
        folder, shape=(10, 24, 28), spacing=SPACING, with_seg=False, with_nifti=False, seed=3
    )
    ordered = sorted(
        study.ct_files,
        key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    shift = SPACING[0] * math.tan(math.radians(tilt_deg))
    ipps: dict[str, np.ndarray] = {}
    z_of: dict[float, int] = {}
    for k, path in enumerate(ordered):
        ds = pydicom.dcmread(path)
        col = np.asarray([float(v) for v in ds.ImageOrientationPatient[3:]])
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient]) + k * shift * col
        z_of[round(float(ds.ImagePositionPatient[2]), 3)] = k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.save_as(path)
        ipps[str(ds.SOPInstanceUID)] = ipp
    assert study.rtstruct_file is not None
    rt = pydicom.dcmread(study.rtstruct_file)
    for roi in rt.ROIContourSequence:
        for c in roi.ContourSequence:
            pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            k = z_of[round(float(pts[0, 2]), 3)]
            pts = pts + k * shift * col[None, :]
            c.ContourData = [f"{v:.6f}" for v in pts.reshape(-1)]
    rt.save_as(study.rtstruct_file)
    return study, ipps


@pytest.mark.parametrize("tilt_deg", [TILT_DEG, 0.0])
def test_tilted_stack_places_every_voxel_at_its_position(tmp_path: Path, tilt_deg: float) -> None:
    study, ipps = _study(tmp_path / "src", tilt_deg)
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    (written,) = summary.written
    (path,) = written.images  # one image: a tilted stack is not split
    image = open_image(store, path)
    meta = image.metadata
    deid = Deidentifier.from_env(SECRET_ENV)
    truth = {deid.uid(u): ipp for u, ipp in ipps.items()}
    rows = records.read_table(store, "images").to_pylist()
    assert {r["sop_instance_id"] for r in rows} == set(truth)
    row_dir, col_dir = meta.direction[:, 2], meta.direction[:, 1]
    dy, dx = SPACING[1], SPACING[2]
    for row in rows:
        for j, i in ((0, 0), (5, 17), (23, 27)):
            lps = meta.affine @ np.array([row["z_index"], j, i, 1.0])
            expected = truth[row["sop_instance_id"]] + j * dy * col_dir + i * dx * row_dir
            np.testing.assert_allclose(lps[:3], expected, atol=1e-3)
    # direction stays orthonormal; the OME z scale is the step along the normal
    np.testing.assert_allclose(meta.direction.T @ meta.direction, np.eye(3), atol=1e-6)
    assert meta.levels[0].scale[0] == pytest.approx(SPACING[0], abs=1e-4)
    np.testing.assert_allclose(meta.levels[0].translation, meta.origin[::-1], atol=1e-6)
    assert meta.extra["regularly_spaced"] is True
    atlas = json.loads(store.read_bytes(f"{path}/zarr.json"))["attributes"]["atlas"]
    if tilt_deg:
        assert atlas["sheared"] is True
        assert atlas["tilt_deg"] == pytest.approx(tilt_deg, abs=1e-3)
    else:
        assert "sheared" not in atlas
        assert "tilt_deg" not in atlas
    (series,) = records.read_table(store, "series").to_pylist()
    if tilt_deg:
        assert series["tilt_deg"] == pytest.approx(tilt_deg, abs=1e-3)
    else:
        assert series["tilt_deg"] is None
    # the RTSTRUCT contours (shifted with their slices) land on the same voxels as untilted
    (name,) = image.label_names
    mask = np.asarray(image.label(name).read(0))
    np.testing.assert_array_equal(mask > 0, study.truth_labels > 0)  # type: ignore[attr-defined]


def test_varying_shear_is_still_flagged_not_sheared() -> None:
    """In-plane drift that does not grow by one constant step per slice: no sheared affine,
    the stack stays ``regularly_spaced: False`` with a note."""
    from atlas.ingest.geometry import stack_geometry

    iop = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    even = [(0.0, 0.5 * k, 2.0 * k) for k in range(10)]
    geometry = stack_geometry(even, iop, (0.8, 0.7), None, 10)
    assert geometry.regularly_spaced and geometry.slice_step is not None
    np.testing.assert_allclose(geometry.slice_step, (0.0, 0.5, 2.0))
    varying = [(0.0, 0.05 * k * k, 2.0 * k) for k in range(10)]
    geometry = stack_geometry(varying, iop, (0.8, 0.7), None, 10)
    assert not geometry.regularly_spaced and geometry.slice_step is None
    assert geometry.note and "gantry tilt" in geometry.note
    straight = [(0.0, 0.0, 2.0 * k) for k in range(10)]
    assert stack_geometry(straight, iop, (0.8, 0.7), None, 10).slice_step is None


def test_writer_accepts_only_a_consistent_slice_step(tmp_path: Path) -> None:
    """``write_image(slice_step=...)`` is the only way to a non-orthonormal affine, and its
    step must agree with the z spacing along the normal."""
    from atlas.errors import InvalidInput
    from atlas.ome import write_image

    data = np.zeros((4, 8, 8), dtype=np.int16)
    store = str(tmp_path / "store")
    for bad in ((0.0, 0.5, 3.0), (0.0, 0.0, 2.0), (math.nan, 0.0, 2.0), (0.0, 1.0)):
        with pytest.raises(InvalidInput, match="slice_step"):
            write_image(store, "x.ome.zarr", data, spacing=(2.0, 1.0, 1.0), slice_step=bad)
    with pytest.raises(InvalidInput, match="3-D"):
        write_image(store, "y.ome.zarr", data[0], spacing=(1.0, 1.0), slice_step=(0, 1, 2))
    image = write_image(store, "z.ome.zarr", data, spacing=(2.0, 1.0, 1.0), slice_step=(0, 1, 2))
    np.testing.assert_allclose(image.metadata.affine[:3, 0], (0.0, 1.0, 2.0))
    np.testing.assert_allclose(image.metadata.direction, np.eye(3)[:, ::-1])


def test_tilted_stack_with_a_gap_is_split_into_sheared_parts(tmp_path: Path) -> None:
    """Missing slices still split the stack (decision 0015); each part keeps the shear."""
    study, ipps = _study(tmp_path / "src", TILT_DEG)
    by_z = sorted(study.ct_files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for k in (4, 5):
        ipps.pop(str(pydicom.dcmread(by_z[k]).SOPInstanceUID))
        by_z[k].unlink()
    summary, store = ingest_series([tmp_path / "src"], tmp_path / "store")
    assert not summary.quarantined
    (written,) = summary.written
    assert len(written.images) == 2
    deid = Deidentifier.from_env(SECRET_ENV)
    truth = {deid.uid(u): ipp for u, ipp in ipps.items()}
    rows = records.read_table(store, "images").to_pylist()
    assert {r["sop_instance_id"] for r in rows} == set(truth)
    for row in rows:
        meta = open_image(store, row["image_path"]).metadata
        lps = meta.affine @ np.array([row["z_index"], 5.0, 17.0, 1.0])
        expected = (
            truth[row["sop_instance_id"]]
            + 5 * SPACING[1] * meta.direction[:, 1]
            + 17 * SPACING[2] * meta.direction[:, 2]
        )
        np.testing.assert_allclose(lps[:3], expected, atol=1e-3)
