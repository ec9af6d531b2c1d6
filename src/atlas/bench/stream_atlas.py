"""The Atlas row of ``atlas bench stream``: ``atlas.stream.AtlasDataset`` through its DataLoader.

The benchmark's volumes become a :class:`atlas.stream.VolumeTable` (what ``plan_epochs`` builds
from a catalog: one row per volume, the tumour label's bounding box per volume from the
annotation rows), sampled by a :class:`atlas.stream.BalancedSampler` (half the patches centred
in the tumour's box, image and label read together, as MONAI's ``RandCropByPosNegLabeld``).
Its epoch-0 samples are *the* patch list of the benchmark: the naive loader and the ceilings
read exactly these boxes (:func:`atlas_patches`), so every list reader is checked against the
same checksum.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np

from atlas.bench.stream_data import LABEL, TUMOUR, BenchData, PatchSpec, Site, volume_path
from atlas.bench.stream_measure import Sink
from atlas.errors import NotFound

__all__ = ["SITE", "WarmAtlas", "atlas_available", "atlas_patches", "run_atlas", "volume_table"]

#: the site name of the benchmark's volumes in the plan (each row maps it to its own store)
SITE = "bench"


def atlas_available() -> bool:
    """Whether ``atlas.stream`` and its dataset are installed in this tree."""
    return (
        importlib.util.find_spec("atlas.stream") is not None
        and importlib.util.find_spec("atlas.stream.dataset") is not None
    )


def volume_table(data: BenchData) -> Any:
    """The plan's table of the benchmark's volumes, with each volume's tumour box."""
    import pyarrow as pa

    from atlas.stream import VolumeTable

    n = len(data.images)
    nz, ny, nx = data.shape
    sz, sy, sx = data.spacing
    volumes = pa.table(
        {
            "site": [SITE] * n,
            "collection": ["bench"] * n,
            "subject_id": [f"subject-{i:03d}" for i in range(n)],
            "series_id": [f"series-{i:03d}" for i in range(n)],
            "volume": [0] * n,
            "image_path": [volume_path(i) for i in range(n)],
            "size_z": [nz] * n,
            "size_y": [ny] * n,
            "size_x": [nx] * n,
            "spacing_z": [float(sz)] * n,
            "spacing_y": [float(sy)] * n,
            "spacing_x": [float(sx)] * n,
            "levels": [1] * n,
            "channels": pa.array([None] * n, pa.int64()),
            "labels": [[LABEL]] * n,
        }
    )
    rows: dict[str, list[Any]] = {
        k: []
        for k in ("site", "series_id", "volume", "label_image", "label_value", "label_name",
                  "z0", "z1", "y0", "y1", "x0", "x1", "voxels")
    }  # fmt: skip
    for i, label in enumerate(data.labels):
        where = np.argwhere(label == TUMOUR)
        if not len(where):
            continue
        lo, hi = where.min(axis=0), where.max(axis=0) + 1
        values = (SITE, f"series-{i:03d}", 0, LABEL, TUMOUR, "tumour",
                  lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], len(where))  # fmt: skip
        for key, value in zip(rows, values, strict=True):
            rows[key].append(int(value) if isinstance(value, np.integer) else value)
    return VolumeTable.from_arrow(volumes, pa.table(rows))


def _sampler(data: BenchData, samples: int | None = None) -> Any:
    from atlas.stream import BalancedSampler

    per_volume = max(1, (samples or len(data.patches)) // len(data.images))
    return BalancedSampler(data.patch_size, labels=("tumour",), positive=0.5, per_volume=per_volume)


def atlas_patches(data: BenchData, seed: int = 0) -> list[PatchSpec]:
    """The epoch-0 samples of the Atlas sampler, as the benchmark's patch list (storage order)."""
    from atlas.stream import EpochOrder, EpochPlan

    plan = EpochPlan(volume_table(data), _sampler(data), seed=seed, epoch=0,
                     order=EpochOrder(shuffle=False))  # fmt: skip
    specs = plan.specs(np.arange(len(plan)))
    return [
        PatchSpec(
            int(s.volume),
            (int(s.start[0]), int(s.start[1]), int(s.start[2])),
            (int(s.size[0]), int(s.size[1]), int(s.size[2])),
        )
        for s in specs
    ]


def run_atlas(
    site: Site, data: BenchData, sink: Sink, batch: int, workers: int = 2, seed: int = 0
) -> None:
    """AtlasDataset over the benchmark's table, through its DataLoader with ``workers``.

    On a site whose latency is injected in the zarr store stack the reader uses
    ``engine="zarr"`` (tensorstore would not see it); everywhere else the default engine.

    Raises
    ------
    NotFound
        ``atlas.stream`` is not available.
    """
    if not atlas_available():
        raise NotFound("atlas.stream is not available in this installation")
    from atlas.read import Reader
    from atlas.stream import AtlasDataset

    options: dict[str, Any] = {}
    if site.store.latency is not None:
        options["engine"] = "zarr"
    reader = Reader({SITE: site.store}, **options)
    dataset = AtlasDataset(volume_table(data), _sampler(data), reader=reader, seed=seed,
                           subset=None)  # fmt: skip
    loader = dataset.loader(batch_size=batch, num_workers=workers)
    with warnings.catch_warnings():  # more workers than cores is the point of the x4 row
        warnings.filterwarnings("ignore", message=".*worker processes in total.*")
        _consume(loader, sink)
    del loader, dataset
    reader.close()


class WarmAtlas:
    """The warm Atlas row: one loader kept across repeats, as in a long training run.

    :meth:`warm_up` reads epoch 0 unmeasured (the workers start, open their stores and fill
    their caches); each call then reads the next epoch with the same workers. Epochs have
    ``samples`` samples (longer than the shared list, so the steady rate shows), each
    verified against the ground truth like every other row; they are other epochs than
    the list, so the row is left out of the list checksum.
    """

    def __init__(self, site: Site, data: BenchData, batch: int, workers: int, samples: int):
        if not atlas_available():
            raise NotFound("atlas.stream is not available in this installation")
        from atlas.read import Reader
        from atlas.stream import AtlasDataset

        options: dict[str, Any] = {"engine": "zarr"} if site.store.latency is not None else {}
        self.reader = Reader({SITE: site.store}, **options)
        dataset = AtlasDataset(volume_table(data), _sampler(data, samples), reader=self.reader,
                               seed=0, subset=None)  # fmt: skip
        self.samples = len(dataset)
        self.loader = dataset.loader(batch_size=batch, num_workers=workers)

    def warm_up(self) -> None:
        """Read one whole epoch, unmeasured."""
        self(Sink())

    def __call__(self, sink: Sink) -> None:
        """Read the next epoch into ``sink``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*worker processes in total.*")
            _consume(self.loader, sink)

    def close(self) -> None:
        """Stop the workers."""
        self.loader.close()
        self.reader.close()


def _start(region: Any) -> tuple[int, int, int]:
    """A sample's first voxel from its meta ``region`` (an ``atlas.read.Region`` or a pair)."""
    start = region.start if hasattr(region, "start") else region[0]
    return int(start[0]), int(start[1]), int(start[2])


def _consume(loader: Any, sink: Sink) -> None:
    for item in loader:
        meta = item["meta"]
        keys = [
            (int(v), *_start(region))
            for v, region in zip(meta["volume_index"], meta["region"], strict=True)
        ]
        images, labels = item["image"].numpy(), item["label"].numpy()
        sink.add(keys, [im[0] for im in images], [lab[0] for lab in labels])
        if sink.full:
            break
