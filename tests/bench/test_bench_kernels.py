"""Smoke test of the kernel benchmark: it runs, compares results and writes its report.

No timing thresholds: benchmarks report numbers, tests only check that they are produced.
"""

from __future__ import annotations

import json
from pathlib import Path

from atlas.bench.kernels import run

KERNELS = {"downsample_mean", "downsample_mode", "window_to_uint8"}


def test_quick_run_writes_report(tmp_path: Path) -> None:
    paths = run(out=tmp_path / "kernels", quick=True)

    assert set(paths) == {"json", "md", "png"}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    rows = report["rows"]
    assert {row["kernel"] for row in rows} == KERNELS
    for row in rows:
        assert row["equal"] is True, row["case"]
        assert row["ratio"] > 0, row["case"]
        assert row["numpy_ms"] > 0 and row["native_ms"] > 0
    assert report["machine"]["cpu_count"] >= 1
    assert report["meta"]["quick"] is True

    table = paths["md"].read_text(encoding="utf-8")
    assert "| case |" in table
    for row in rows:
        assert row["case"] in table
