"""Smoke test of the stream benchmark (``atlas bench stream --quick``, as CI runs it).

It checks the report's structure and that every row read the right data: each sample a
pipeline yielded matches the ground truth voxels (image and label) at the position it reports,
and the pipelines that read the shared patch list read exactly that list (equal order-free
checksums). No timing thresholds: benchmarks report numbers, tests check they are produced.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from atlas.bench.stream import PIPELINES
from atlas.bench.stream_data import PatchSpec, make_data
from atlas.cli.app import main
from atlas.ome import Layout

pytestmark = [pytest.mark.slow, pytest.mark.s3]

LIST_READERS = {"naive", "tensorstore", "numcodecs", "atlas", "atlas-w0", "atlas-w4"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    for package in ("monai", "torchio"):  # not imported here: the benchmark quiets MONAI
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install -e '.[torch]')")
    out = tmp_path_factory.mktemp("bench-stream")
    argv = sys.argv
    sys.argv = ["atlas", "bench", "stream", "--quick", "--out", str(out)]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        sys.argv = argv
    for name in ("stream.json", "stream.md"):
        assert (out / name).stat().st_size > 0
    for name in ("stream.png", "stream-first-batch.png", "stream-memory.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "stream.json").read_text(encoding="utf-8"))
    doc["markdown"] = (out / "stream.md").read_text(encoding="utf-8")
    return doc


def test_every_pipeline_on_every_site(report: dict) -> None:
    rows = report["rows"]
    sites = {r["site"] for r in rows}
    assert sites == {"memory", "local", "local + 20 ms (LatencyStore)", "seaweedfs + 20 ms (proxy)"}
    by_site = {s: {r["id"] for r in rows if r["site"] == s} for s in sites}
    readers = {"naive", "monai", "torchio", "tensorstore"}
    assert readers <= by_site["local"] and readers <= by_site["seaweedfs + 20 ms (proxy)"]
    assert by_site["memory"] == {"numcodecs"}
    # rows that cannot see LatencyStore are not run there, and the report says which
    blind = report["meta"]["not run with injected latency (cannot see it)"]
    assert PIPELINES["tensorstore"] in blind["local + 20 ms (LatencyStore)"]
    assert "tensorstore" not in by_site["local + 20 ms (LatencyStore)"]
    assert "naive" in by_site["local + 20 ms (LatencyStore)"]
    if report["meta"]["atlas_available"]:
        assert {"atlas", "atlas-w0", "atlas-w4", "atlas-warm"} <= by_site["local"]
        assert "atlas-warm" in by_site["seaweedfs + 20 ms (proxy)"]


def test_every_row_read_the_right_data(report: dict) -> None:
    rows = report["rows"]
    n = report["meta"]["sizes.patches"]
    for row in rows:
        assert row["verified"] is True, row["case"]
        # the warm row reads later epochs of its own length (a loader kept across epochs)
        expected = report["meta"]["sizes.warm_epoch"] if row["id"] == "atlas-warm" else n
        assert row["samples"] == expected, row["case"]
        assert all(run["mismatches"] == 0 for run in row["runs"]), row["case"]
    shared = {r["list_checksum"] for r in rows if r["id"] in LIST_READERS}
    assert len(shared) == 1  # the same list, whatever the order or the reader


def test_figures_and_table(report: dict) -> None:
    for row in report["rows"]:
        assert row["samples/s"] > 0 and row["MB/s"] > 0
        assert row["first batch s"] >= 0 and row["peak MB"] >= 0 and row["CPU %"] > 0
        assert -1 <= row["shuffle rho"] <= 1
        if row["site"] != "memory":
            assert row["x naive"] > 0
        assert row["pipeline"] in report["markdown"]
    assert "ambitions" in report["meta"] and report["machine"]["cpu_count"] >= 1


def test_the_ground_truth_check_catches_a_wrong_patch() -> None:
    data = make_data(1, (16, 32, 32), (8, 8, 8), 4, Layout((8, 16, 16), (16, 32, 32)))
    spec = data.patches[0]
    moved = PatchSpec(
        spec.volume, (spec.start[0], spec.start[1], (spec.start[2] + 3) % 24), spec.size
    )
    assert data.expected_crc(spec.key) != data.expected_crc(moved.key)
