"""Batched region reads from the OME-Zarr images of every site.

:class:`Reader` reads many :class:`ReadRequest` (an :class:`ImageRef`, a :class:`Region` and a
pyramid level) at once: validated before any I/O, grouped by shard, issued with an in-flight
budget sized from each site's measured latency, through tensorstore (one chunk cache per
process) or zarr-python. Each :class:`Patch` carries its patient-space affine.

Imported lazily: ``import atlas.read`` loads neither numpy, zarr nor tensorstore.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "Engine": "atlas.read.request",
    "ImageInfo": "atlas.read.info",
    "ImageRef": "atlas.read.request",
    "OutOfBounds": "atlas.read.request",
    "Patch": "atlas.read.info",
    "ReadRequest": "atlas.read.request",
    "Reader": "atlas.read.reader",
    "Region": "atlas.read.request",
    "credential_variables": "atlas.read.dask",
    "in_flight_for": "atlas.read.concurrency",
    "refs_from_rows": "atlas.read.dask",
    "to_dask": "atlas.read.dask",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.read", _EXPORTS, globals())
