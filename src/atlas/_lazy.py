"""Lazy public names for a package's ``__init__``: imported on first use, never at import.

Each subpackage that re-exports names from its modules calls :func:`attach` instead of importing
them, so ``import atlas.index`` loads no heavy library. ``atlas/__init__`` keeps its own copy of
these few lines: ``import atlas`` loads no other module of Atlas at all.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def attach(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` resolving ``exports`` on first use.

    Parameters
    ----------
    package : str
        The package's dotted name, for the error message of an unknown attribute.
    exports : dict of str to str
        Public name to ``"module"`` (the same name there) or ``"module:name"``.
    namespace : dict
        The package's ``globals()``, listed by ``__dir__`` with the exported names.

    Returns
    -------
    tuple of callables
        ``(__getattr__, __dir__)`` to bind in the package's ``__init__``.
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        return getattr(import_module(module), attr or name)

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
