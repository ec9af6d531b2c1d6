"""`atlas export` run in-process: files written, one-line errors, nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tests.stream.plan_catalog import build_catalog

from atlas.index.catalog import open_atlas
from atlas.privacy import audit


@pytest.fixture(scope="module")
def one_site(tmp_path_factory: pytest.TempPathFactory):
    cat = build_catalog(tmp_path_factory.mktemp("cli-export"), {"site-a": 1})
    row = open_atlas(cat.stores, purpose="research").series.to_arrow().value.to_pylist()[0]
    return cat, row, cat.stores["site-a"].url


def test_export_nifti_with_labels(atlas_cli, one_site, tmp_path: Path) -> None:
    cat, row, url = one_site
    sid = row["series_id"]
    code, out, err = atlas_cli("export", sid, "--labels", "--store", url, "-o", str(tmp_path))
    assert code == 0, err
    label = row["labels"][0]
    assert f"wrote {tmp_path / (sid + '.nii.gz')}" in out
    assert f"{sid}_{label}.nii.gz" in out and "16 x 32 x 32 voxels" in out
    img = nib.load(str(tmp_path / f"{sid}.nii.gz"))
    assert img.shape == (32, 32, 16)
    np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.7, 1.5), rtol=1e-6)
    assert any(e.get("action") == "export" for e in audit.events(cat.stores["site-a"]))


def test_export_png_with_window(atlas_cli, one_site, tmp_path: Path) -> None:
    _, row, url = one_site
    sid = row["series_id"]
    code, out, err = atlas_cli(
        "export", sid, "--format", "png", "--window", "bone", "--store", url, "-o", str(tmp_path)
    )
    assert code == 0, err
    assert "window 1800,400" in out
    assert len(os.listdir(tmp_path / sid)) == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2.25.4242"], "series 2.25.4242 not found for purpose 'research'"),
        (["SID", "--format", "png", "--window", "wide"], "--window must be one of"),
        (["SID", "--format", "tiff"], "format must be nifti or png"),
        (["SID", "--level", "2"], "has levels 0..0, not 2"),
        (["SID", "--purpose", "marketing"], "purpose"),
    ],
)
def test_export_errors_are_one_line(atlas_cli, one_site, tmp_path, args, message) -> None:
    _, row, url = one_site
    args = [row["series_id"] if a == "SID" else a for a in args]
    code, _, err = atlas_cli("export", *args, "--store", url, "-o", str(tmp_path / "o"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert os.listdir(tmp_path) == []


def test_export_refuses_existing_then_overwrites(atlas_cli, one_site, tmp_path: Path) -> None:
    _, row, url = one_site
    sid = row["series_id"]
    (tmp_path / f"{sid}.nii.gz").write_bytes(b"old")
    code, _, err = atlas_cli("export", sid, "--store", url, "-o", str(tmp_path))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / f"{sid}.nii.gz").read_bytes() == b"old"
    code, _, err = atlas_cli("export", sid, "--store", url, "-o", str(tmp_path), "--overwrite")
    assert code == 0, err
    assert nib.load(str(tmp_path / f"{sid}.nii.gz")).shape == (32, 32, 16)
    assert os.listdir(tmp_path) == [f"{sid}.nii.gz"]


def test_export_to_a_file_path_is_refused(atlas_cli, one_site, tmp_path: Path) -> None:
    _, row, url = one_site
    (tmp_path / "f").write_text("x")
    code, _, err = atlas_cli("export", row["series_id"], "--store", url, "-o", str(tmp_path / "f"))
    assert code == 2 and "not a folder" in err
    assert os.listdir(tmp_path) == ["f"]
