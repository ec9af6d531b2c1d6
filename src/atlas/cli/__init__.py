"""The ``atlas`` command line.

:data:`app` is the typer app; each command is a thin shell over the Python API. :func:`main`
runs it with Atlas's error handling (one ``error:`` line, exit code 2; internal errors 3).
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {"app": "atlas.cli.app", "main": "atlas.cli.app"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.cli", _EXPORTS, globals())
