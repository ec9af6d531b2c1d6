"""Test fixtures for Atlas and for projects built on it: generated data and real servers.

- :mod:`~atlas.testing.phantom`: a seeded CT-like body phantom with labels (dask, lazy);
- :mod:`~atlas.testing.synthetic`: a synthetic DICOM study (CT, SEG, RTSTRUCT, NIfTI) with a
  fake identity to de-identify;
- :mod:`~atlas.testing.records`: generated index records (staging tables without pixels);
- :mod:`~atlas.testing.seaweed`: SeaweedFS S3 servers on loopback (single and cluster);
- :mod:`~atlas.testing.latency_proxy`: a loopback TCP proxy adding a delay to every request;
- :mod:`~atlas.testing.pytest_plugin`: pytest fixtures that run them;
- :mod:`~atlas.testing.store_tests`: the store test suite a new storage backend subclasses.

The submodules are imported on first use (``atlas.testing.phantom`` or
``from atlas.testing import phantom``), so importing this package loads nothing heavy.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "latency_proxy",
    "phantom",
    "pytest_plugin",
    "records",
    "seaweed",
    "store_tests",
    "synthetic",
]


def __getattr__(name: str) -> ModuleType:
    """Import the submodule ``name`` of :data:`__all__` on first use."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The names of this package, its lazy submodules included."""
    return sorted({*globals(), *__all__})
