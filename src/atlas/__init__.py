"""Atlas: a federated cancer-imaging atlas engine.

Public API only; everything is imported lazily so ``import atlas`` stays cheap and has no side
effects.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Store": "atlas.storage",
    "open_store": "atlas.storage",
    "Site": "atlas.config",
    "load_sites": "atlas.config",
    "write_image": "atlas.ome",
    "open_image": "atlas.ome",
    "Layout": "atlas.ome",
    "LabelSpec": "atlas.ome",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atlas' has no attribute {name!r}")
    return getattr(import_module(module), name)
