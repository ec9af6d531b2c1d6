"""Smoke test of ``atlas bench serve --quick``: a real server, real clients, a report.

No timing thresholds: benchmarks report numbers, tests only check that they are produced and
that every tile answered was a PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from atlas.cli.app import app

CASES = {
    "cold axial L0", "cold coronal L0", "cold sagittal L0", "cold mixed", "warm mixed",
    "naive mixed", "naive axial L0", "naive coronal L0",
}  # fmt: skip


def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "serve"
    result = CliRunner().invoke(app, ["bench", "serve", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("serve.json", "serve.md", "serve.png", "serve-latency.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "serve.json").read_text(encoding="utf-8"))
    rows = report["rows"]
    assert {r["case"] for r in rows} >= CASES
    for row in rows:
        if row["case"] in CASES:
            assert row["requests"] > 0 and row["errors"] == 0, row
            assert row["tiles_per_s"] > 0 and row["p50_ms"] <= row["p99_ms"]
            assert row["server_rss_mb"] > 0
    warm = [r for r in rows if r["case"] == "warm mixed"]
    assert {r["clients"] for r in warm} == {1, 4}
    assert report["meta"]["quick"] is True and report["meta"]["shape_zyx"] == [48, 96, 96]
    assert "ambition_warm_p99_under_20ms" in report["meta"]
    assert "| cold mixed |" in (out / "serve.md").read_text(encoding="utf-8")
