"""``scripts/run-tests`` (what ``make test`` and CI run): exit codes, also in parallel."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run-tests"


def _run(tmp_path: Path, body: str, workers: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_probe.py"
    test.write_text(body)
    env = {**os.environ, "VENV": sys.prefix, "ATLAS_TEST_WORKERS": workers}
    return subprocess.run(
        ["bash", str(SCRIPT), str(test), "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_passing_failing_and_empty_runs(tmp_path: Path) -> None:
    passed = _run(tmp_path, "def test_one():\n    assert True\n", "0")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed" in passed.stdout
    failed = _run(tmp_path, "def test_one():\n    assert False\n", "0")
    assert failed.returncode == 1 and "1 failed" in failed.stdout
    empty = _run(tmp_path, "X = 1\n", "0")
    assert empty.returncode == 1
    assert "collected no tests - treating that as a failure" in empty.stderr


def test_parallel_run_passes_and_an_empty_one_still_fails(tmp_path: Path) -> None:
    passed = _run(tmp_path, "def test_one():\n    assert True\n", "2")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "bringing up nodes" in passed.stdout and "1 passed" in passed.stdout
    empty = _run(tmp_path, "X = 1\n", "2")
    assert empty.returncode == 1
    assert "collected no tests - treating that as a failure" in empty.stderr
