"""The in-flight budget: Little's law on the measured round trip of each site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.read.read_study import Written, write_study

from atlas.errors import InvalidInput
from atlas.read import Reader, in_flight_for
from atlas.read.concurrency import MAX_IN_FLIGHT, MIN_IN_FLIGHT, measure_latency
from atlas.storage import LatencyConfig, open_store

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_budget_follows_littles_law() -> None:
    # ceil(cores * (1 + L / 1 ms)), within [16, 512]
    assert in_flight_for(0.0, cores=2) == MIN_IN_FLIGHT == 16
    assert in_flight_for(0.0001, cores=16) == 18
    assert in_flight_for(0.020, cores=2) == 42
    assert in_flight_for(0.060, cores=2) == 122
    assert in_flight_for(0.020, cores=16) == 336
    assert in_flight_for(5.0, cores=2) == MAX_IN_FLIGHT == 512
    assert in_flight_for(0.02, cores=2, service_s=0.004) == MIN_IN_FLIGHT
    assert in_flight_for(0.04, cores=2, service_s=0.004) == 22
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="latency must be a finite number"):
            in_flight_for(bad)


def test_latency_is_the_fastest_of_a_few_gets() -> None:
    calls = []
    assert measure_latency(lambda: calls.append(1), samples=3) >= 0
    assert len(calls) == 3


def test_a_far_site_gets_more_reads_in_flight_than_a_local_disk(local_study: Written) -> None:
    root = local_study.store.location.root
    far = open_store(root, site="far", latency=LatencyConfig(base=0.02))
    reader = Reader({"near": local_study.store, "far": far}, engine="zarr")
    near_n, far_n = reader.concurrency_for("near"), reader.concurrency_for("far")
    assert far_n >= in_flight_for(0.02)  # measured at least the injected 20 ms
    assert far_n > near_n >= MIN_IN_FLIGHT
    assert reader.concurrency_for("far") == far_n  # measured once, then kept
    fixed = Reader({"near": local_study.store, "far": far}, engine="zarr", concurrency=7)
    assert fixed.concurrency_for("far") == fixed.concurrency_for("near") == 7


def test_a_reader_with_a_small_budget_reads_the_same(tmp_path) -> None:
    study = write_study(open_store(tmp_path / "s", site="s"))
    from atlas.read import ImageRef, ReadRequest

    for engine in ("tensorstore", "zarr"):
        for budget in (1, 3, 1000):
            patch = Reader({"s": study.store}, engine=engine, concurrency=budget).read(
                ReadRequest(ImageRef("s", study.path))
            )
            assert (patch.data == study.data).all()


def test_import_atlas_read_loads_nothing_heavy() -> None:
    code = (
        "import sys, atlas.read\n"
        "heavy = {'numpy', 'zarr', 'tensorstore', 'dask', 's3fs', 'fsspec'}\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == ""
