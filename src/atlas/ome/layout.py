"""On-disk layout of an image level: inner chunks, shards, compression and checksums."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from atlas.errors import InvalidInput

CODECS = ("zstd", "blosc-lz4", "blosc-zstd", "none")

#: inner chunk / shard shapes per number of spatial axes
DEFAULT_CHUNKS = {3: (32, 64, 64), 2: (256, 256)}
DEFAULT_SHARDS = {3: (64, 512, 512), 2: (2048, 2048)}


@dataclass(frozen=True)
class Layout:
    """How each level is split and compressed.

    ``chunks`` is the inner (read) chunk and ``shards`` the object written to the store, both
    over the *spatial* axes (a channel axis always gets chunk 1). Each shard dimension must be a
    multiple of the chunk dimension; both are clipped to the level's shape.
    """

    chunks: tuple[int, ...] | None = None
    shards: tuple[int, ...] | None = None
    codec: str = "zstd"
    level: int = 3
    checksum: bool = True

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise InvalidInput(f"unknown codec {self.codec!r}; choose one of {CODECS}")
        for name, dims in (("chunks", self.chunks), ("shards", self.shards)):
            if dims is not None and (
                not dims or any(not isinstance(d, int) or d < 1 for d in dims)
            ):
                raise InvalidInput(f"{name} must be positive integers, got {dims!r}")
        if self.chunks and self.shards:
            if len(self.chunks) != len(self.shards):
                raise InvalidInput(
                    f"chunks {self.chunks} and shards {self.shards} have different lengths"
                )
            bad = [
                i for i, (c, s) in enumerate(zip(self.chunks, self.shards, strict=True)) if s % c
            ]
            if bad:
                raise InvalidInput(
                    f"each shard dimension must be a multiple of the chunk dimension: "
                    f"shards {self.shards} vs chunks {self.chunks}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def resolve(self, spatial_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Chunk and shard shapes for a level of ``spatial_shape`` (clipped, shard % chunk == 0)."""
        nd = len(spatial_shape)
        chunks = self.chunks or DEFAULT_CHUNKS.get(nd)
        shards = self.shards or DEFAULT_SHARDS.get(nd)
        if chunks is None or shards is None or len(chunks) != nd or len(shards) != nd:
            raise InvalidInput(
                f"layout chunks/shards need {nd} dimensions for a {nd}-D image, "
                f"got chunks={chunks} shards={shards}"
            )
        out_c, out_s = [], []
        for n, c, s in zip(spatial_shape, chunks, shards, strict=True):
            c = min(c, n)
            s = max(c, min(s, math.ceil(n / c) * c))
            s = (s // c) * c
            out_c.append(c)
            out_s.append(s)
        return tuple(out_c), tuple(out_s)

    def codecs(self, itemsize: int) -> list[Any]:
        """The zarr v3 ``compressors`` list (bytes-to-bytes codecs) for this layout."""
        from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

        out: list[Any] = []
        if self.codec == "zstd":
            out.append(ZstdCodec(level=self.level))
        elif self.codec.startswith("blosc-"):
            out.append(
                BloscCodec(
                    cname=self.codec.split("-", 1)[1],  # type: ignore[arg-type]
                    clevel=self.level,
                    shuffle="bitshuffle" if itemsize == 1 else "shuffle",
                    typesize=itemsize,
                )
            )
        if self.checksum:
            out.append(Crc32cCodec())
        return out
