"""Library warnings quote original values (pydicom: ``Invalid value for VR UI: '1.2.…'``): the
real CLI, in-process and with worker processes, never lets one out — not on stdout or stderr, not
in the report, not in any byte of the store — and the report counts them, value-free."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataelem import RawDataElement  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.tag import Tag  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the test reads them itself

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
SRC = Path(__file__).resolve().parents[2] / "src"

#: original values the crafted series carries, each invalid for its VR (pydicom warns on them)
CANARIES = {
    (0x0020, 0x000D): ("UI", "1.2.0123.CANARYSTUDY77"),
    (0x0020, 0x000E): ("UI", "1.2.0123.CANARYUID999"),
    (0x0010, 0x0010): ("PN", "CANARYNAME^" + "Q" * 70),  # a component over 64 characters
    (0x0008, 0x0090): ("PN", "CANARYDOC=A=B=C"),  # four component groups
    (0x0010, 0x0030): ("DA", "19610203X"),
    (0x0008, 0x0020): ("DA", "2020CANARYDA"),
    (0x0020, 0x0013): ("IS", "12CANARYIS"),
    (0x0018, 0x0050): ("DS", "9_8765_4321"),  # float() accepts it; the DS rule does not
    (0x0010, 0x1010): ("AS", "061YCANARYAS"),
}


def _raw(value: str) -> bytes:
    data = value.encode()
    return data + (b" " if len(data) % 2 else b"")


def make_series(folder: Path) -> list[str]:
    """Three CT slices whose headers carry the canaries as raw (invalid) values."""
    folder.mkdir(parents=True)
    canaries = [v for _, v in CANARIES.values()] + ["CANARYPID42"]
    for i in range(3):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality = "CT"
        ds.PatientID = "CANARYPID42"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.ImagePositionPatient = [0, 0, i * 2.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.PixelData = (np.arange(64, dtype=np.int16) + i).tobytes()
        sop = f"1.2.0123.CANARYSOP{i}"
        canaries.append(sop)
        for tag, (vr, value) in {**CANARIES, (0x0008, 0x0018): ("UI", sop)}.items():
            raw = _raw(value)
            ds[Tag(tag)] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
        ds.save_as(folder / f"ct{i}.dcm", enforce_file_format=True)
    return canaries


def _quoted(messages: list[str]) -> set[str]:
    return {q for m in messages for q in re.findall(r"'([^']{4,})'", m)}


def real_files_that_warn(folder: Path) -> list[str]:
    """pydicom's own test files that make it warn with a quoted value (found by globbing its
    data folder); returns the quoted values."""
    root = Path(get_testdata_file("CT_small.dcm") or "").parent
    folder.mkdir(parents=True)
    found: set[str] = set()
    for name in ("rtdose_1frame.dcm", "badVR.dcm"):
        matches = glob.glob(str(root / "**" / name), recursive=True)
        assert matches, f"pydicom test file {name} is missing"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(matches[0], stop_before_pixels=True)
            for elem in ds.iterall():
                _ = elem.value
        quoted = _quoted([str(w.message) for w in seen])
        assert quoted, f"{name} no longer makes pydicom warn with a value"
        found |= quoted
        shutil.copy(matches[0], folder / name)
    return sorted(found)


def _all_text(store: Path, report: Path, out: str, err: str) -> tuple[list[bytes], list[str]]:
    import pyarrow.parquet as pq

    blobs = [p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()]
    texts = [out, err, report.read_text()]
    for p in sorted(store.rglob("*.parquet")):
        texts.append(json.dumps(pq.read_table(io.BytesIO(p.read_bytes())).to_pylist(), default=str))
    return blobs, texts


_NOTE = re.compile(r"^[a-z]+: [a-zA-Z ]+(VR [A-Z]{2} )?\((value|message) not shown\)$")


@pytest.mark.parametrize("mode", [["--scheduler", "synchronous"], ["--workers", "1"]])
def test_cli_never_prints_or_stores_values_quoted_by_library_warnings(tmp_path, mode) -> None:
    canaries = make_series(tmp_path / "in" / "crafted")
    real = real_files_that_warn(tmp_path / "in" / "real")
    store, report = tmp_path / "store", tmp_path / "report.json"
    env = {**os.environ, SECRET_ENV: SECRET, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", "ingest", str(tmp_path / "in"),
         "--site", "test-site", "--collection", "warned", "--store", str(store),
         "--secret-env", SECRET_ENV, "--report", str(report), *mode],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert summary["series_written"] >= 1, summary
    blobs, texts = _all_text(store, report, proc.stdout, proc.stderr)
    assert blobs, "nothing was written"
    for value in [*canaries, *real]:
        for text in texts:
            assert value not in text, f"{value!r} leaked"
        assert all(value.encode() not in raw for raw in blobs), f"{value!r} stored"
    # the warnings were seen and counted, by fixed descriptions only
    assert summary["warnings_seen"] == sum(summary["warnings"].values()) > 0
    assert any("invalid value for VR UI" in k for k in summary["warnings"]), summary["warnings"]
    assert all(_NOTE.match(k) for k in summary["warnings"]), summary["warnings"]
    assert "Invalid value for VR" not in proc.stderr and "UserWarning" not in proc.stderr


def test_hook_counts_per_thread_and_keeps_other_warnings(capsys) -> None:
    import threading

    from atlas.ingest import quiet

    quiet.install()
    results: dict[int, dict[str, int]] = {}

    def read(i: int) -> None:
        with quiet.collect() as notes:
            for _ in range(i + 1):
                pydicom.valuerep.validate_value("UI", f"1.2.0{i}.CANARY", pydicom.config.WARN)
        results[i] = dict(notes)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    with warnings.catch_warnings():
        pass  # a block elsewhere restores the previous hook: collect() installs it again
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {
        i: {"pydicom: invalid value for VR UI (value not shown)": i + 1} for i in range(4)
    }
    assert "CANARY" not in capsys.readouterr().err
