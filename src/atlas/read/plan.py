"""Turn requests into reads: resolve regions, clip them to the image, group them by shard.

A :class:`PlannedRead` says, for one request, which box of the stored array to read (the part
of the region inside the level), where it goes in the output (the rest is fill), how many
shard objects it touches (its weight in the in-flight budget, see
:mod:`atlas.read.concurrency`) and which shard it starts in. :func:`shard_groups` orders the
reads of one site so that reads of the same shard object are issued together: tensorstore then
fetches that shard's index once and coalesces the byte ranges of its chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.read.info import ImageInfo
from atlas.read.request import ImageRef, OutOfBounds, ReadRequest, Region

__all__ = ["PlannedRead", "check_fill", "plan_read", "shard_groups"]


@dataclass(frozen=True, eq=False)
class PlannedRead:
    """One request, resolved against its image.

    Attributes
    ----------
    index
        Position of the request in the caller's list (results come back in that order).
    request
        The request with its region made explicit (full rank, never ``None``).
    info
        The image's :class:`~atlas.read.ImageInfo`.
    source
        Slices of the stored level to read (the region clipped to the level), or ``None``
        when the region lies wholly outside.
    target
        Where ``source`` goes in the output array.
    padded
        Whether part of the output is fill.
    chunks
        Inner chunks the read touches (0 when nothing is read).
    gets
        Shard objects the read touches: the read's weight in the in-flight budget (tensorstore
        reads the touched chunks of one shard with one coalesced request).
    shard
        Grid index of the shard holding the first voxel read (for grouping).
    """

    index: int
    request: ReadRequest
    info: ImageInfo
    source: tuple[slice, ...] | None
    target: tuple[slice, ...] | None
    padded: bool
    chunks: int
    shard: tuple[int, ...]
    gets: int = 0

    @property
    def array_key(self) -> tuple[ImageRef, int]:
        """What identifies the stored array read: the image (or label) and level."""
        return self.request.image, self.request.level


def resolve_region(request: ReadRequest, info: ImageInfo) -> Region:
    """The request's region at full rank: ``None`` -> the whole level, spatial-only -> all channels.

    Raises
    ------
    InvalidInput
        The level is out of range or the region's rank fits neither the array's nor its
        spatial rank.
    """
    shape = info.level_shape(request.level)
    region = request.region
    if region is None:
        return Region.whole(shape)
    if region.ndim == len(shape):
        return region
    lead = len(shape) - info.n_spatial
    if lead and region.ndim == info.n_spatial:
        return Region((0,) * lead + region.start, shape[:lead] + region.stop)
    ranks = f"{len(shape)}" if not lead else f"{len(shape)} or {info.n_spatial}"
    raise InvalidInput(
        f"region {region.start}..{region.stop} of {request.image} has {region.ndim} axes; "
        f"level {request.level} of shape {shape} needs {ranks}",
        site=request.image.site,
    )


def check_fill(fill: float, dtype: np.dtype[Any], what: str) -> None:
    """Refuse a fill that ``dtype`` cannot hold exactly (NaN in an integer image, 0.5, ...)."""
    value = np.asarray(fill)
    if value.ndim or value.dtype.kind not in "biuf":
        raise InvalidInput(f"fill must be a number, got {fill!r}")
    with np.errstate(all="ignore"):
        cast = value.astype(dtype)
    if not (np.isnan(value) and np.isnan(cast)) and cast != value:
        raise InvalidInput(f"fill {fill!r} cannot be stored exactly as {dtype} ({what})")


def plan_read(
    index: int, request: ReadRequest, info: ImageInfo, out_of_bounds: OutOfBounds, fill: float
) -> PlannedRead:
    """Resolve ``request`` against ``info`` (no I/O).

    Raises
    ------
    InvalidInput
        A bad level, region rank or dtype, a fill the output dtype cannot hold, or (with
        :attr:`OutOfBounds.RAISE`) a region not wholly inside the level.
    """
    region = resolve_region(request, info)
    shape = info.level_shape(request.level)
    dtype = out_dtype(request, info)
    inside = [
        (max(a, 0), min(b, n)) for a, b, n in zip(region.start, region.stop, shape, strict=True)
    ]
    whole = all(a >= 0 and b <= n for a, b, n in zip(region.start, region.stop, shape, strict=True))
    if not whole:
        if out_of_bounds is OutOfBounds.RAISE:
            raise InvalidInput(
                f"region {region.start}..{region.stop} lies partly outside level "
                f"{request.level} of {request.image} (shape {shape}); pass "
                "out_of_bounds='pad' to pad it",
                site=request.image.site,
            )
        check_fill(fill, dtype, f"padding {request.image}")
    resolved = ReadRequest(request.image, region, request.level, request.dtype)
    if any(a >= b for a, b in inside):
        return PlannedRead(index, resolved, info, None, None, True, 0, ())
    lv = info.level(request.level)
    source = tuple(slice(a, b) for a, b in inside)
    target = tuple(slice(a - s, b - s) for (a, b), s in zip(inside, region.start, strict=True))
    chunks = math.prod(
        (b - 1) // c - a // c + 1 for (a, b), c in zip(inside, lv.chunks, strict=True)
    )
    shard = tuple(a // s for (a, _), s in zip(inside, lv.shards, strict=True))
    gets = math.prod((b - 1) // s - a // s + 1 for (a, b), s in zip(inside, lv.shards, strict=True))
    return PlannedRead(index, resolved, info, source, target, not whole, chunks, shard, gets)


def out_dtype(request: ReadRequest, info: ImageInfo) -> np.dtype[Any]:
    """The dtype a request returns; :class:`InvalidInput` if the cast could lose values."""
    if request.dtype is None:
        return info.dtype
    want = np.dtype(request.dtype)
    if not np.can_cast(info.dtype, want, "safe"):
        raise InvalidInput(
            f"{request.image} is stored as {info.dtype}; reading it as {want} could lose "
            f"values (only safe casts are allowed, e.g. int16 -> int32 or float32)",
            site=request.image.site,
        )
    return want


def shard_groups(reads: Sequence[PlannedRead]) -> Iterator[list[PlannedRead]]:
    """The reads that need I/O, in storage order, one list per shard object.

    Reads are sorted by (image, level, shard, region start), so reads of one shard come
    together and consecutive groups walk each array in shard order.
    """

    def key(r: PlannedRead) -> tuple[Any, ...]:
        ref = r.request.image
        start = r.request.region.start if r.request.region is not None else ()
        return (ref.path, ref.label or "", r.request.level, r.shard, start)

    ordered = sorted((r for r in reads if r.source is not None), key=key)
    for _, group in groupby(ordered, key=lambda r: key(r)[:4]):
        yield list(group)
