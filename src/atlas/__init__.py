"""Atlas: a federated cancer-imaging atlas engine.

The names a user calls, by task (each also lives in its package, named in brackets):

- stores: :func:`open_store`, :class:`Store` (``atlas.storage``);
- settings: :class:`Site`, :func:`load_sites`, :class:`Settings`, :func:`load_settings`
  (``atlas.config``), :class:`IngestOptions` (``atlas.ingest``);
- images: :func:`write_image`, :func:`open_image`, :class:`OmeImage`, :class:`Layout`,
  :class:`LabelSpec` (``atlas.ome``);
- ingest: :func:`ingest_sources` (``atlas.ingest.ingest``: the package ``atlas.ingest`` holds
  the name ``ingest`` itself), :class:`IngestSummary`, :class:`SubjectMap`;
- the catalog: :func:`build_index`, :func:`open_atlas`, :class:`Atlas` (``atlas.index``);
- erasure: :func:`erase_subject`, :class:`ErasureReport` (``atlas.index``);
- errors: :class:`AtlasError`, the root of ``atlas.errors``.

Everything is imported lazily, on first use, so ``import atlas`` stays cheap and has no side
effects.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> "module" (same name there) or "module:name"
_EXPORTS = {
    "AtlasError": "atlas.errors",
    "Store": "atlas.storage",
    "open_store": "atlas.storage",
    "Site": "atlas.config",
    "Settings": "atlas.config",
    "load_sites": "atlas.config",
    "load_settings": "atlas.config",
    "write_image": "atlas.ome",
    "open_image": "atlas.ome",
    "OmeImage": "atlas.ome",
    "Layout": "atlas.ome",
    "LabelSpec": "atlas.ome",
    "ingest_sources": "atlas.ingest:ingest",
    "IngestOptions": "atlas.ingest",
    "IngestSummary": "atlas.ingest",
    "SubjectMap": "atlas.ingest",
    "build_index": "atlas.index",
    "open_atlas": "atlas.index",
    "Atlas": "atlas.index",
    "erase_subject": "atlas.index",
    "ErasureReport": "atlas.index",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'atlas' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr or name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
