"""`atlas.export`: NIfTI read back by nibabel and SimpleITK, PNG slices, atomic folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from tests.stream.plan_catalog import build_catalog

from atlas.errors import AlreadyExists, InvalidInput, NotFound
from atlas.export import export_series, nifti_affine
from atlas.export.series import check_png_shape
from atlas.export.window import ExportWindow, WindowPreset, parse_export_window
from atlas.index.catalog import open_atlas
from atlas.privacy import audit
from atlas.read import ImageRef, Reader, ReadRequest


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("export")
    cat = build_catalog(root, {"site-a": 2})
    row = open_atlas(cat.stores, purpose="research").series.to_arrow().value.to_pylist()[0]
    reader = Reader(cat.stores)
    ref = ImageRef(row["site"], row["image_path"])
    info = reader.info(ref)
    data = reader.read(ReadRequest(ref)).data
    label = row["labels"][0]
    mask = reader.read(ReadRequest(ImageRef(row["site"], row["image_path"], label))).data
    reader.close()
    return cat, row, info, data, label, mask


def _points(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return (affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]


def test_nifti_affine_maps_xyz_index_to_ras() -> None:
    lps = np.array([[0, 0, 0.7, -10], [0, 0.8, 0, -20], [1.5, 0, 0, -300], [0, 0, 0, 1.0]])
    ras = nifti_affine(lps)
    ijk = np.array([[3, 5, 7], [0, 0, 0], [1, 2, 3]])
    want = _points(lps, ijk[:, ::-1]) * [-1, -1, 1]
    np.testing.assert_allclose(_points(ras, ijk), want)


def test_nifti_read_back_by_nibabel_and_simpleitk(catalog, tmp_path: Path) -> None:
    cat, row, info, data, label, mask = catalog
    assert len(set(info.spacing)) > 1  # anisotropic: an axis swap would show
    out = tmp_path / "out"
    result = export_series(cat.stores, row["series_id"], out, labels=True)
    sid = row["series_id"]
    assert sorted(os.listdir(out)) == sorted([f"{sid}.nii.gz", f"{sid}_{label}.nii.gz"])
    assert result.files[0] == f"{sid}.nii.gz" and result.shape == data.shape

    img = nib.load(str(out / f"{sid}.nii.gz"))
    vol = np.asarray(img.dataobj)
    assert vol.shape == data.shape[::-1] and vol.dtype == data.dtype
    np.testing.assert_array_equal(vol, data.transpose(2, 1, 0))
    z, y, x = np.array(data.shape) - 1
    ijk = np.array([[0, 0, 0], [x, 0, 0], [0, y, 0], [0, 0, z], [x, y, z], [3, 7, 11]])
    lps = _points(info.affine, ijk[:, ::-1])  # Atlas: (z, y, x) -> LPS
    np.testing.assert_allclose(_points(img.affine, ijk), lps * [-1, -1, 1], atol=1e-4)
    np.testing.assert_allclose(img.header.get_zooms(), info.spacing[::-1], rtol=1e-6)

    simg = sitk.ReadImage(str(out / f"{sid}.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(simg), data)
    for i, j, k in ijk:
        got = simg.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))  # LPS
        np.testing.assert_allclose(got, _points(info.affine, np.array([[k, j, i]]))[0], atol=1e-4)

    m = nib.load(str(out / f"{sid}_{label}.nii.gz"))
    np.testing.assert_array_equal(np.asarray(m.dataobj), mask.transpose(2, 1, 0))
    np.testing.assert_allclose(m.affine, img.affine)
    assert np.count_nonzero(mask) > 0
    np.testing.assert_array_equal(mask, cat.truth[row["image_path"]].astype(mask.dtype))


def test_export_is_audited_with_the_pseudonymous_id_only(catalog, tmp_path: Path) -> None:
    cat, row, *_ = catalog
    result = export_series(cat.stores, row["series_id"], tmp_path / "a")
    (event,) = [e for e in audit.events(cat.stores["site-a"]) if e.get("action") == "export"][-1:]
    assert event["series_id"] == row["series_id"] and event["format"] == "nifti"
    assert event["purpose"] == "research" and result.audit_key.endswith(".json")
    text = repr(event)
    assert row["subject_id"] not in text and row["image_path"] not in text
    assert str(tmp_path) not in text


def test_png_slices_windowed(catalog, tmp_path: Path) -> None:
    cat, row, _, data, *_ = catalog
    sid = row["series_id"]
    result = export_series(cat.stores, sid, tmp_path, fmt="png", window=ExportWindow(400, 40))
    names = sorted(os.listdir(tmp_path / sid))
    assert names == [f"z{z:04d}.png" for z in range(data.shape[0])]
    assert result.window == (400.0, 40.0)
    for z in (0, data.shape[0] // 2):
        got = np.asarray(Image.open(tmp_path / sid / f"z{z:04d}.png"))
        want = np.clip(np.rint((data[z].astype(np.float32) + 160) * (255 / 400)), 0, 255)
        np.testing.assert_array_equal(got, want.astype(np.uint8))
    assert got.min() < got.max()  # a window that shows something


def test_png_default_window_is_soft_tissue_for_ct(catalog, tmp_path: Path) -> None:
    cat, row, *_ = catalog
    assert export_series(cat.stores, row["series_id"], tmp_path, fmt="png").window == (400, 40)


def test_window_parsing() -> None:
    assert parse_export_window("lung", "CT") is WindowPreset.LUNG
    assert parse_export_window(" 80 , 40 ", None) == ExportWindow(80, 40)
    assert parse_export_window(None, "MR") is WindowPreset.AUTO
    for bad in ("wide", "0,40", "1,2,3", "nan,1"):
        with pytest.raises(InvalidInput, match="window"):
            parse_export_window(bad, "CT")


def test_unknown_series_is_not_found_naming_it(catalog, tmp_path: Path) -> None:
    cat, *_ = catalog
    with pytest.raises(NotFound, match=r"series 2\.25\.999 not found"):
        export_series(cat.stores, "2.25.999", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert os.listdir(tmp_path) == []


def test_consent_by_purpose(tmp_path: Path) -> None:
    cat = build_catalog(tmp_path / "c", {"site-b": 1}, scopes=("ai-training",))
    sid = open_atlas(cat.stores, purpose="ai-training").series.to_arrow().value["series_id"][0]
    with pytest.raises(NotFound, match=re.escape(f"series {sid} not found for purpose 'research'")):
        export_series(cat.stores, sid.as_py(), tmp_path / "o", purpose="research")
    assert not (tmp_path / "o").exists()
    export_series(cat.stores, sid.as_py(), tmp_path / "o", purpose="ai-training")
    assert len(os.listdir(tmp_path / "o")) == 1


def test_existing_file_refused_unless_overwrite(catalog, tmp_path: Path) -> None:
    cat, row, _, data, *_ = catalog
    sid = row["series_id"]
    target = tmp_path / f"{sid}.nii.gz"
    target.write_bytes(b"mine")
    (tmp_path / "other.txt").write_text("kept")
    with pytest.raises(AlreadyExists, match="--overwrite"):
        export_series(cat.stores, sid, tmp_path)
    assert target.read_bytes() == b"mine"
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, "other.txt"])
    export_series(cat.stores, sid, tmp_path, overwrite=True)
    np.testing.assert_array_equal(np.asarray(nib.load(str(target)).dataobj).T, data)
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, "other.txt"])
    # a PNG folder is replaced whole
    (tmp_path / sid).mkdir()
    (tmp_path / sid / "stale.png").write_bytes(b"x")
    with pytest.raises(AlreadyExists):
        export_series(cat.stores, sid, tmp_path, fmt="png")
    export_series(cat.stores, sid, tmp_path, fmt="png", overwrite=True)
    assert "stale.png" not in os.listdir(tmp_path / sid)
    assert len(os.listdir(tmp_path / sid)) == data.shape[0]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_unwritable_output_is_one_line_error_and_writes_nothing(catalog, tmp_path: Path) -> None:
    cat, row, *_ = catalog
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        with pytest.raises(InvalidInput, match=r"(cannot write into|not a folder)") as exc:
            export_series(cat.stores, row["series_id"], out)
        assert "\n" not in str(exc.value)
    assert os.listdir(tmp_path) == ["file"]


def test_read_only_filesystem_is_refused(catalog) -> None:
    """Even root cannot create folders in /proc: the error is one line, nothing is left."""
    cat, row, *_ = catalog
    with pytest.raises(InvalidInput, match="cannot write into /proc/atlas-export") as exc:
        export_series(cat.stores, row["series_id"], "/proc/atlas-export", fmt="png")
    assert "\n" not in str(exc.value)
    assert not Path("/proc/atlas-export").exists()


def test_refusals_before_writing(catalog, tmp_path: Path) -> None:
    cat, row, *_ = catalog
    sid = row["series_id"]
    with pytest.raises(InvalidInput, match=r"levels 0\.\.0, not 3"):
        export_series(cat.stores, sid, tmp_path / "o", level=3)
    with pytest.raises(NotFound, match=r"has volumes \[0\], not 2"):
        export_series(cat.stores, sid, tmp_path / "o", volume=2)
    with pytest.raises(InvalidInput, match="format must be nifti or png"):
        export_series(cat.stores, sid, tmp_path / "o", fmt="dicom")
    with pytest.raises(InvalidInput, match="--format nifti with --labels"):
        export_series(cat.stores, sid, tmp_path / "o", fmt="png", labels=True)
    assert os.listdir(tmp_path) == []


def test_png_refuses_4d_and_multichannel() -> None:
    check_png_shape((16, 32, 32), 3)
    check_png_shape((1, 16, 32, 32), 3)  # one channel is a grey volume
    for shape, n in (((3, 16, 32, 32), 3), ((2, 4, 16, 32, 32), 3), ((4, 16, 32, 32), 4)):
        with pytest.raises(InvalidInput, match="PNG export holds single-channel 3-D"):
            check_png_shape(shape, n)


def test_level_one_uses_its_own_affine(tmp_path: Path) -> None:
    """A coarser level: data and affine of that level, same patient points as the reader's."""
    cat = build_catalog(tmp_path / "c", {"site-p": 1}, shape=(6, 272, 272))
    row = open_atlas(cat.stores, purpose="research").series.to_arrow().value.to_pylist()[0]
    reader = Reader(cat.stores)
    ref = ImageRef(row["site"], row["image_path"])
    info = reader.info(ref)
    assert len(info.levels) >= 2
    data = reader.read(ReadRequest(ref, level=1)).data
    reader.close()
    result = export_series(cat.stores, row["series_id"], tmp_path / "o", level=1)
    assert result.shape == data.shape != info.shape
    path = tmp_path / "o" / f"{row['series_id']}.nii.gz"
    img = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(img.dataobj), data.transpose(2, 1, 0))
    ijk = np.array([[0, 0, 0], [5, 9, 2], [data.shape[2] - 1, data.shape[1] - 1, 0]])
    lps = _points(info.level_affine(1), ijk[:, ::-1])
    np.testing.assert_allclose(_points(img.affine, ijk), lps * [-1, -1, 1], atol=1e-4)
    simg = sitk.ReadImage(str(path))
    np.testing.assert_allclose(simg.GetSpacing(), info.level_spacing(1)[::-1], rtol=1e-5)
    got = simg.TransformIndexToPhysicalPoint((5, 9, 2))
    np.testing.assert_allclose(got, lps[1], atol=1e-4)


def test_failure_mid_write_leaves_nothing(catalog, tmp_path: Path, monkeypatch) -> None:
    """A disk that fills up on the second file: no partial export, no hidden folder left."""
    import errno

    from atlas.export import nifti

    cat, row, *_ = catalog
    real = nifti.write_nifti
    calls: list[Path] = []

    def full_disk(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, affine)

    monkeypatch.setattr(nifti, "write_nifti", full_disk)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "a.txt").write_text("a")
    for out in (tmp_path / "new", tmp_path / "kept"):
        calls.clear()
        with pytest.raises(InvalidInput, match="No space left on device"):
            export_series(cat.stores, row["series_id"], out, labels=True)
        assert len(calls) == 2
    assert os.listdir(tmp_path) == ["kept"]
    assert os.listdir(tmp_path / "kept") == ["a.txt"]
