"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import sys

import pytest

from atlas.cli.app import main


@pytest.fixture
def atlas_cli(capsys, monkeypatch):
    """Run the real entry point in-process: ``(exit code, stdout, stderr)``."""
    monkeypatch.delenv("ATLAS_SITES", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["atlas", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        assert "Traceback" not in out.err + out.out
        return code, out.out, out.err

    return run
