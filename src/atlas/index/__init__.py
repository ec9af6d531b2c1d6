"""The catalog: each site's sharded Parquet index of images and annotations, and its versions.

:func:`build_index` compacts the staging records ingest wrote (:mod:`atlas.records`) into a new
index version and publishes it with one atomic pointer write; :func:`open_atlas` opens every
site's published index for one purpose (consent is checked) and answers queries across them
(:class:`Atlas`); :func:`erase_subject` removes every byte of one subject from a site, index
versions included, and :func:`verify_erased` checks that nothing is left.

Imported lazily: ``import atlas.index`` loads neither DuckDB nor pyarrow.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "Atlas": "atlas.index.catalog",
    "BuildResult": "atlas.index.build",
    "ErasureReport": "atlas.index.erase",
    "build_index": "atlas.index.build",
    "erase_subject": "atlas.index.erase",
    "open_atlas": "atlas.index.catalog",
    "verify_erased": "atlas.index.erase",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.index", _EXPORTS, globals())
