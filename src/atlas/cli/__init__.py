"""The ``atlas`` command line.

:data:`app` is the typer app; each command is a thin shell over the Python API. :func:`main`
runs it with Atlas's error handling (one ``error:`` line, exit code 2; internal errors 3).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'atlas.cli' has no attribute {name!r}")
    return getattr(import_module("atlas.cli.app"), name)
