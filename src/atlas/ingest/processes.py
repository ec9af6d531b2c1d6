"""When ingest may start worker processes, and the checks that keep it from hanging.

Local worker processes are started with the ``spawn`` method: each one imports the calling
script again. A script that calls :func:`atlas.ingest.driver.ingest` with ``workers=`` at its
top level, outside ``if __name__ == "__main__":``, would start more workers from every worker,
and never finish. :func:`check_can_start_workers` refuses that, before any process starts, with
an error that says what to change. Data in a ``memory://`` store lives in one process only,
so worker processes (or a remote scheduler) cannot write into it: :func:`check_store` refuses.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import FrameType

from atlas.errors import ConfigError
from atlas.storage import Store

_HOW = (
    'put the call under `if __name__ == "__main__":`, or call ingest() without workers= '
    "to ingest in this process"
)


def check_store(store: Store) -> None:
    """Refuse a ``memory://`` store for worker processes or a remote scheduler."""
    if store.process_local:
        raise ConfigError(
            f"{store.url} lives in this process only: worker processes or a remote scheduler "
            "would write into their own memory and the data would be lost; ingest in this "
            "process (no workers= / scheduler=), or into a local folder or S3 store",
            location=store.url,
        )


def _guarded_lines(source: str) -> list[tuple[int, int]]:
    """Line ranges of ``if __name__ == "__main__":`` blocks of a module's source."""
    out: list[tuple[int, int]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            continue
        test = node.test
        sides = [test.left, *test.comparators]
        names = {s.id for s in sides if isinstance(s, ast.Name)}
        values = {s.value for s in sides if isinstance(s, ast.Constant)}
        equal = len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
        if equal and "__name__" in names and "__main__" in values:
            out.append((node.body[0].lineno, node.end_lineno or node.lineno))
    return out


def _module_frame(start: FrameType | None) -> FrameType | None:
    frame = start
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if frame.f_code.co_name == "<module>" and name in ("__main__", "__mp_main__"):
            return frame
        frame = frame.f_back
    return None


def check_can_start_workers() -> None:
    """Refuse to start local worker processes from unguarded top-level script code."""
    frame = _module_frame(sys._getframe(1))
    if frame is None:
        return  # called from an interactive session, a notebook or a function's caller only
    script = frame.f_code.co_filename
    if frame.f_globals.get("__name__") == "__mp_main__":
        raise ConfigError(
            f"ingest() was called while a worker process imported {Path(script).name} again: {_HOW}"
        )
    try:
        source = Path(script).read_text(encoding="utf-8")
        ranges = _guarded_lines(source)
    except (OSError, SyntaxError, ValueError):
        return  # not a readable script file (python -c, stdin): nothing is imported again
    line = frame.f_lineno
    if not any(lo <= line <= hi for lo, hi in ranges):
        raise ConfigError(
            f"ingest(workers=...) starts worker processes, which import {Path(script).name} "
            f"again and would run this call again from line {line}: {_HOW}"
        )


__all__ = ["check_can_start_workers", "check_store"]
