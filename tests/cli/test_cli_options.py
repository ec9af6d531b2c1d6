"""The command line's help tells the truth, and bad option values are one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from atlas.cli.app import app
from atlas.cli.options import EXIT_INTERNAL, EXIT_USAGE, AtlasGroup, run

runner = CliRunner()
WIDE = {"COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}


def _commands() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return found


COMMANDS = _commands()


def test_every_command_is_covered() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("", "ingest", "query", "bench ingest", "sites check", "index build"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "atlas")
def test_help_shows_switches_and_truthful_defaults(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output  # flags take no value
    command = dict((tuple(p), c) for p, c in COMMANDS)[tuple(path)]
    ctx = command.make_context(" ".join(["atlas", *path]), [], resilient_parsing=True)
    for param in command.get_params(ctx):
        text = param.help or ""
        if re.search(r"\bdefault\b", text, re.IGNORECASE) and param.show_default is not False:
            # the help states the default in words: no contradicting "[default: X]" beside it
            assert param.default is None or param.default == "", (path, param.name, text)
        if getattr(param, "is_flag", False) and param.default is True and param.opts != ["--help"]:
            assert param.secondary_opts, f"{path} {param.name}: on by default, no --no- form"
    for line in result.output.splitlines():
        if "[default: 0]" in line:
            assert "default" not in line.split("[default: 0]")[0].lower(), line


# -- bad values: one `error:` line, exit code 2, never a traceback ----------------------------


def _bad_cases(tmp: Path) -> dict[str, list[str]]:
    bad_port = tmp / "bad-port.toml"
    bad_port.write_text(
        '[[site]]\nname = "nl"\nstore = "s3://b/p"\nendpoint = "http://127.0.0.1:70000"\n'
    )
    infinite = tmp / "infinite.toml"
    infinite.write_text('[[site]]\nname = "nl"\nstore = "s3://b/p"\nread_timeout = inf\n')
    store = str(tmp / "store")
    return {
        "memory limit": ["index", "build", "--store", store, "--memory-limit", "banana"],
        "report in a missing folder": [
            "ingest", str(tmp), "--site", "a", "--collection", "c", "--store", store,
            "--report", str(tmp / "missing" / "report.json"),
        ],
        "report is a folder": [
            "ingest", str(tmp), "--site", "a", "--collection", "c", "--store", store,
            "--report", str(tmp),
        ],
        "query output in a missing folder": [
            "query", "--store", store, "--format", "parquet",
            "--output", str(tmp / "missing" / "rows.parquet"),
        ],
        "endpoint port out of range": [
            "query", "--store", "s3://b/p?endpoint=http://127.0.0.1:99999",
        ],
        "endpoint port not a number": [
            "ingest", str(tmp), "--site", "a", "--collection", "c",
            "--store", "s3://b/p?endpoint=http://127.0.0.1:port",
        ],
        "endpoint port in sites.toml": ["sites", "list", "--sites", str(bad_port)],
        "infinite timeout in sites.toml": ["sites", "check", "--sites", str(infinite)],
        "zero workers": ["ingest", str(tmp), "--site", "a", "--collection", "c", "--workers", "0"],
        "negative workers": ["bench", "ingest", "--workers", "-2"],
        "zero repeats": ["bench", "write", "--repeats", "0"],
        "bad shape": ["demo", "--shape", "banana"],
        "not a number": ["bench", "index", "--images", "many"],
        "unknown option": ["sites", "list", "--colour"],
    }  # fmt: skip


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


def test_bad_option_values_are_one_line_errors(tmp_path, capsys) -> None:
    errors: list[str] = []
    for name, argv in _bad_cases(tmp_path).items():
        errors.clear()
        code = run(app, argv, lambda m: errors.append(f"error: {m}"))
        out = capsys.readouterr()
        assert code == EXIT_USAGE, (name, code, errors, out)
        assert "Traceback" not in out.out + out.err, name
        line = _one_error_line("\n".join(errors))
        assert len(line) < 400, (name, line)
    assert not (tmp_path / "store").exists()  # refused before any work (nothing created)


@pytest.mark.parametrize(
    "case", ["memory limit", "report in a missing folder", "endpoint port in sites.toml"]
)
def test_bad_values_with_the_real_cli(tmp_path, case: str) -> None:
    argv = _bad_cases(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, "-m", "atlas.cli.app", *argv],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "80", "ATLAS_DEBUG": ""},
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = _one_error_line(proc.stderr)
    assert {"memory limit": "--memory-limit", "report in a missing folder": "--report",
            "endpoint port in sites.toml": "invalid port"}[case] in line  # fmt: skip


def _crashing_app() -> typer.Typer:
    demo = typer.Typer(cls=AtlasGroup)

    @demo.callback()
    def root(debug: bool = typer.Option(False, "--debug")) -> None:
        """Root."""

    @demo.command()
    def boom() -> None:
        """Fails unexpectedly, with data in the message."""
        raise KeyError("Smith^John")

    return demo


def test_unexpected_errors_say_internal_error_without_traceback(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ATLAS_DEBUG", raising=False)
    errors: list[str] = []
    code = run(_crashing_app(), ["boom"], lambda m: errors.append(f"error: {m}"))
    out = capsys.readouterr()
    assert code == EXIT_INTERNAL
    line = _one_error_line("\n".join(errors))
    assert "internal error" in line and "KeyError" in line and "--debug" in line
    assert "Smith" not in line  # a foreign exception's message may carry data: not shown
    assert "Traceback" not in out.err + out.out

    errors.clear()
    code = run(_crashing_app(), ["--debug", "boom"], lambda m: errors.append(f"error: {m}"))
    out = capsys.readouterr()
    assert code == EXIT_INTERNAL and "Traceback" in out.err  # asked for: shown
    assert "internal error" in errors[0]
