"""Crafted geometry an attacker (or a broken scanner) could send: every voxel still lands where
its slice's header says, or the instance is quarantined with a reason.

Uses the ``Series`` builder of ``tests/test_ingest_geometry.py`` (copies of pydicom's
``CT_small.dcm`` with chosen geometry).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.test_ingest_geometry import (  # noqa: F401 (site_secret is an autouse fixture)
    AXIAL,
    SECRET_ENV,
    TOL_MM,
    Series,
    _assert_no_nonfinite_json,
    _ingest,
    site_secret,
)

from atlas.ingest import records
from atlas.ingest.deid import Deidentifier
from atlas.ome import open_image

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
    summary, store = _ingest([tmp_path / "src"], tmp_path / "store")
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
