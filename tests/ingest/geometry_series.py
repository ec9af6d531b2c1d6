"""Builders shared by the geometry tests (not a test module).

:class:`Series` writes copies of pydicom's ``CT_small.dcm`` with chosen positions,
orientations and edited attributes (one series); :func:`ingest_series` ingests files into a
local store in-process; the ``assert_*`` helpers check what was written.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from atlas import records  # noqa: E402
from atlas.ingest.driver import IngestSummary, ingest  # noqa: E402
from atlas.ingest.series import IngestOptions  # noqa: E402
from atlas.ome import open_image  # noqa: E402
from atlas.privacy import Deidentifier  # noqa: E402
from atlas.storage import Store, open_store  # noqa: E402

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
OPTIONS = IngestOptions(secret_env=SECRET_ENV, allow_burned_in=True)
DATA_STORE = Path(data_store.__file__).parent / "data"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
TOL_MM = 1e-3


def ds_text(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


class Series:
    """CT slices copied from ``CT_small.dcm`` with chosen geometry (one series)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        self.series_uid = generate_uid()
        #: original SOP Instance UID -> Image Position (Patient) written
        self.positions: dict[str, tuple[float, ...]] = {}

    def write(
        self,
        position: Sequence[float] | None,
        *,
        iop: Sequence[float] | None = AXIAL,
        edit: dict[str, Any] | None = None,
    ) -> Path:
        ds = copy.deepcopy(self.base)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = self.series_uid
        ds.InstanceNumber = len(self.positions) + 1
        if position is not None:
            ds.ImagePositionPatient = [ds_text(v) for v in position]
            self.positions[uid] = tuple(float(v) for v in position)
        if iop is not None:
            ds.ImageOrientationPatient = [ds_text(v) for v in iop]
        for keyword, value in (edit or {}).items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        path = self.folder / f"slice{len(list(self.folder.iterdir())):03d}.dcm"
        ds.save_as(path)
        return path


def ingest_series(sources: Sequence[Path], store_dir: Path) -> tuple[IngestSummary, Store]:
    os.environ[SECRET_ENV] = SECRET
    store = open_store(str(store_dir))
    summary = ingest(
        [str(s) for s in sources],
        store=store,
        site="test-site",
        collection="geometry",
        scheduler="synchronous",
        options=OPTIONS,
    )
    return summary, store


def strict_json(text: str) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"non-finite number {token} in JSON")

    return json.loads(text, parse_constant=refuse)


def assert_no_nonfinite_json(root: Path) -> None:
    for path in root.rglob("zarr.json"):
        strict_json(path.read_text())


def assert_every_slice_at_its_ipp(store: Store, originals: dict[str, tuple[float, ...]]) -> int:
    """For every written image row: affine @ (z, 0, 0, 1) is that slice's IPP."""
    deid = Deidentifier.from_env(SECRET_ENV)
    ipp_of = {deid.uid(uid): pos for uid, pos in originals.items()}
    rows = records.read_table(store, "images").to_pylist()
    affines: dict[str, np.ndarray] = {}
    for row in rows:
        path = row["image_path"]
        if path not in affines:
            affines[path] = np.asarray(open_image(store, path).metadata.affine)
        lps = affines[path] @ np.array([row["z_index"], 0.0, 0.0, 1.0])
        np.testing.assert_allclose(lps[:3], ipp_of[row["sop_instance_id"]], atol=TOL_MM)
    assert {r["sop_instance_id"] for r in rows} == set(ipp_of)
    return len(affines)
