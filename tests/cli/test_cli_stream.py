"""`atlas stream`: figures of a real stream, progress, and one error line for bad input."""

from __future__ import annotations

import json

import pytest
from tests.stream.plan_catalog import build_catalog


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-stream")
    build_catalog(root, {"a": 2})
    return ["--store", str(root / "a"), "--site", "a"]


def test_stream_prints_throughput_and_first_batch_time(site, atlas_cli) -> None:
    code, out, err = atlas_cli(
        "stream", "--sampler", "patch", "--size", "8", "--per-volume", "3", "--batch", "2",
        "--steps", "2", "--subset", "all", "--json", *site,
    )  # fmt: skip
    assert code == 0, err
    figures = json.loads(out)
    assert figures["batches"] == 2 and figures["samples"] == 4 and figures["epoch_samples"] == 6
    assert figures["megabytes"] == pytest.approx(4 * 8**3 * 2 / 1e6)  # int16 patches
    assert figures["samples_per_s"] > 0 and figures["mb_per_s"] > 0
    assert figures["time_to_first_batch_s"] is not None and figures["plan_s"] >= 0
    assert figures["sampler"]["name"] == "patch" and figures["report"]["sites"]["a"]["read"] >= 4

    code, out, err = atlas_cli(
        "stream", 'modality == "CT"', "--sampler", "slice", "--axis", "sagittal", "--batch", "4",
        "--subset", "all", *site,
    )  # fmt: skip
    assert code == 0, err
    text = " ".join(out.split())
    for what in ("samples/s", "MB/s", "time to first batch", "slice sampler"):
        assert what in text
    assert "batches" in err  # the progress bar, on stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "ring"], "unknown sampler 'ring'"),
        (["--sampler", "balanced"], "needs --label"),
        (["--sampler", "balanced", "--label", "no-such-label"], "no-such-label"),
        (["--size", "0"], "--size"),
        (["--release", "r-missing"], "r-missing"),
        (["--axis", "oblique", "--sampler", "slice"], "oblique"),
    ],
)
def test_bad_input_is_one_error_line(site, atlas_cli, args, message) -> None:
    code, out, err = atlas_cli("stream", "--subset", "all", *args, *site)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error:") and message in err, err
