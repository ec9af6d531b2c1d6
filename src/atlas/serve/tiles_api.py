"""The tile route: ``GET /api/series/{id}/tiles/{plane}/{level}/{index}/{ty}/{tx}.{fmt}``.

Every parameter is checked before anything is rendered (plane, format, level against the
image's pyramid, slice index against the level-0 extent along the plane's normal, tile row and
column against the level's tile grid, window, labels, opacity); a tile is then answered, in
order, by a ``304`` when ``If-None-Match`` names its ETag, by the tile cache, or by a render
in one of the bounded render slots (:mod:`atlas.serve.limits`; a full queue is a 503 with
``Retry-After``). Tiles of a published image never change, so responses carry a strong
``ETag`` (a digest of the image's identity and geometry and of the tile's parameters) and
``Cache-Control: private, max-age=3600`` (private: the data is behind a token).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from atlas.errors import InvalidInput
from atlas.read import ImageInfo
from atlas.serve.access import require_grant
from atlas.serve.context import SeriesEntry, ServeContext
from atlas.serve.grants import Grant
from atlas.serve.limits import RenderSlots
from atlas.serve.metadata import WINDOWS

__all__ = ["CACHE_CONTROL", "TileFormat", "TileParams", "TilePlane", "tiles_router"]

CACHE_CONTROL = "private, max-age=3600"

#: an explicit window: width and centre
_EXPLICIT = re.compile(
    r"^\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*,\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$"
)
_MAX_WINDOW = 1e7
_LABEL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class TilePlane(StrEnum):
    """The three orthogonal planes (the normal is z, y resp. x)."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


class TileFormat(StrEnum):
    """Encodings of a tile."""

    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


MEDIA_TYPES = {
    TileFormat.PNG: "image/png",
    TileFormat.JPEG: "image/jpeg",
    TileFormat.WEBP: "image/webp",
}

_NORMAL_AXIS = {TilePlane.AXIAL: 0, TilePlane.CORONAL: 1, TilePlane.SAGITTAL: 2}


@dataclass(frozen=True)
class TileParams:
    """A tile request, checked: what the renderer is asked for."""

    plane: TilePlane
    level: int
    index: int
    ty: int
    tx: int
    fmt: TileFormat
    window: str
    labels: tuple[str, ...]
    opacity: float

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form (enums by value), the input of the ETag."""
        out = asdict(self)
        out["plane"] = self.plane.value
        out["fmt"] = self.fmt.value
        out["labels"] = list(self.labels)
        return out


def parse_window(text: str) -> str:
    """The canonical window text: a preset name, ``auto``, or ``W,C`` with ``W > 0``."""
    value = text.strip().lower()
    if value in WINDOWS:
        return value
    m = _EXPLICIT.match(value)
    if not m:
        raise InvalidInput(
            f"window must be one of {list(WINDOWS)} or 'W,C' (width,centre), got {text[:40]!r}"
        )
    width, centre = float(m.group(1)), float(m.group(2))
    if not (math.isfinite(width) and math.isfinite(centre)) or not 0 < width <= _MAX_WINDOW:
        raise InvalidInput(f"window width must be in (0, {_MAX_WINDOW:g}], got {m.group(1)}")
    if abs(centre) > _MAX_WINDOW:
        raise InvalidInput(f"window centre must be within +-{_MAX_WINDOW:g}, got {m.group(2)}")
    return f"{width:g},{centre:g}"


def parse_labels(text: str, available: tuple[str, ...]) -> tuple[str, ...]:
    """The label images to overlay: ``all``, ``none`` or a comma-separated list of names."""
    value = text.strip()
    if value == "all":
        return tuple(available)
    if value in ("none", ""):
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",")))
    for name in names:
        if not _LABEL_NAME.match(name):
            raise InvalidInput(f"invalid label name {name[:64]!r} in labels")
        if name not in available:
            raise InvalidInput(f"this series has no label {name!r}; it has {list(available)}")
    return names


def check_position(info: ImageInfo, plane: TilePlane, level: int, index: int) -> None:
    """Check the level and the level-0 slice index along the plane's normal."""
    n = len(info.levels)
    if not 0 <= level < n:
        raise InvalidInput(f"level must be in 0..{n - 1} for this series, got {level}")
    if info.n_spatial != 3:
        raise InvalidInput("tiles need a 3-D image; this series has 2 spatial axes")
    extent = info.shape[-3:][_NORMAL_AXIS[plane]]
    if not 0 <= index < extent:
        raise InvalidInput(
            f"{plane.value} slice index must be in 0..{extent - 1} (level-0 voxels), got {index}"
        )


def tile_etag(entry: SeriesEntry, info: ImageInfo, params: TileParams) -> str:
    """The strong ETag of a tile: image identity and geometry plus the tile's parameters."""
    doc = {
        "site": entry.site,
        "path": entry.image_path,
        "shape": [list(level.shape) for level in info.levels],
        "dtype": str(info.dtype),
        "affine": info.affine.round(6).tolist(),
        "record": entry.row.get("record_version"),
        "tile": params.canonical(),
        "renderer": RENDER_VERSION,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
    return f'"{digest[:32]}"'


#: bumped when rendering changes what a tile looks like (so cached tiles are not reused)
RENDER_VERSION = 1


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") == etag for part in header.split(","))


def tiles_router(
    ctx: ServeContext,
    slots: RenderSlots,
    *,
    renderer: Callable[..., Any] | None = None,
    cache: Any | None = None,
) -> APIRouter:
    """The tile route, rendering with ``renderer`` in ``slots`` and caching in ``cache``."""
    from atlas.serve.render_adapter import default_cache, default_renderer

    render = renderer if renderer is not None else default_renderer()
    tiles = cache if cache is not None else default_cache(ctx.config.tile_cache_bytes)
    router = APIRouter(prefix="/api", tags=["tiles"])

    @router.get(
        "/series/{series_id}/tiles/{plane}/{level}/{index}/{ty}/{tx}.{fmt}",
        response_class=Response,
        responses={
            200: {"content": {m: {} for m in MEDIA_TYPES.values()}, "description": "the tile"},
            304: {"description": "not modified (If-None-Match)"},
            503: {"description": "overloaded: retry after Retry-After seconds"},
        },
    )
    async def tile(
        request: Request,
        series_id: str = Path(..., min_length=1, max_length=128),
        plane: TilePlane = Path(..., description="axial, coronal or sagittal"),
        level: int = Path(..., ge=0, le=64, description="pyramid level"),
        index: int = Path(..., ge=0, le=1_000_000, description="slice, level-0 voxels"),
        ty: int = Path(..., ge=0, le=100_000, description="tile row"),
        tx: int = Path(..., ge=0, le=100_000, description="tile column"),
        fmt: TileFormat = Path(..., description="png, jpeg or webp"),
        volume: int = Query(0, ge=0, le=1_000_000),
        window: str | None = Query(
            None, max_length=64, description="preset, auto, or W,C (default: the series')"
        ),
        labels: str = Query("all", max_length=2048, description="all, none, or names"),
        opacity: float = Query(0.5, ge=0.0, le=1.0, allow_inf_nan=False),
        grant: Grant = Depends(require_grant),
    ) -> Response:
        """A tile of one plane of a series, windowed, with its label overlays."""
        request.state.audit_event = "INSTANCES_ACCESSED"

        def prepare() -> tuple[SeriesEntry, TileParams, str]:
            entry = ctx.series(grant, series_id, volume)
            request.state.audit_object = entry.series_id
            request.state.audit_site = entry.site
            info = ctx.reader.info(entry.ref())
            check_position(info, plane, level, index)
            default = "ct-soft-tissue" if (entry.row.get("modality") or "") == "CT" else "auto"
            names = tuple(str(x) for x in (entry.row.get("labels") or ()))
            params = TileParams(
                plane=plane,
                level=level,
                index=index,
                ty=ty,
                tx=tx,
                fmt=fmt,
                window=parse_window(window) if window is not None else default,
                labels=parse_labels(labels, names),
                opacity=float(opacity),
            )
            return entry, params, tile_etag(entry, info, params)

        entry, params, etag = await anyio.to_thread.run_sync(prepare)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        body = tiles.get(etag)
        if body is None:
            async with slots.slot():
                rendered = await anyio.to_thread.run_sync(render, ctx.reader, entry, params)
            body = bytes(rendered.data if hasattr(rendered, "data") else rendered)
            tiles.put(etag, body)
        request.state.audit_tiles = 1
        return Response(body, media_type=MEDIA_TYPES[params.fmt], headers=headers)

    return router
