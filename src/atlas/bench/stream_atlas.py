"""The Atlas row of ``atlas bench stream``: ``atlas.stream.AtlasDataset`` through a DataLoader.

The dataset reads the benchmark's own patch list (a sampler that returns it), so its output is
checked against the same list checksum as the naive loader and the ceilings.
"""

from __future__ import annotations

import importlib.util

from atlas.bench.stream_data import BenchData, Site
from atlas.bench.stream_measure import Sink
from atlas.errors import NotFound

__all__ = ["atlas_available", "run_atlas"]


def atlas_available() -> bool:
    """Whether ``atlas.stream`` (the dataset) is installed in this tree."""
    return importlib.util.find_spec("atlas.stream") is not None


def run_atlas(site: Site, data: BenchData, sink: Sink, batch: int, workers: int = 2) -> None:
    """AtlasDataset over the list, through ``torch.utils.data.DataLoader(num_workers=workers)``.

    Raises
    ------
    NotFound
        ``atlas.stream`` is not available.
    """
    if not atlas_available():
        raise NotFound("atlas.stream is not available in this installation")
    raise NotFound("atlas.stream has no AtlasDataset yet")
