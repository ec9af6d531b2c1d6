"""``atlas.bench.plan`` smoke test: a tiny synthetic index, planned both ways (no timing checks)."""

from __future__ import annotations

import numpy as np
import pytest

from atlas.bench.plan import ORDERS, build, measure, read_speed, shuffle_figures


@pytest.mark.slow
def test_plan_benchmark_smoke(tmp_path) -> None:
    build(tmp_path, images=24_000, sites=3)
    atlas = measure(tmp_path, "atlas")
    base = measure(tmp_path, "baseline")
    # the aggregated plan and the image-row listing find the same volumes (train split only
    # for atlas: at most all of them), and every volume has its geometry
    assert 0 < atlas["volumes"] <= base["volumes"]
    assert base["image_rows"] == 24_000
    assert atlas["boxes"] > 0 and atlas["samples"] == 4 * atlas["volumes"]
    assert atlas["first"][2] == [64, 64, 64]
    for key in ("plan_s", "first_sample_s", "peak_rss_mb"):
        assert atlas[key] > 0 and base[key] > 0
    rows = shuffle_figures(5000, np.arange(5000) // 4, caches=(8,))
    assert [r["order"] for r in rows] == [label for label, _ in ORDERS]
    assert rows[0]["spearman"] == 1.0 and abs(rows[-1]["spearman"]) < 0.2
    speed = read_speed(ORDERS[:2], volumes=2, shape=(16, 32, 32), per_volume=2, limit=4)
    assert speed[0]["image opens"] == 2  # storage order opens each image once
