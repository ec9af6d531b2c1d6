"""The tile route: ``GET /api/series/{id}/tiles/{plane}/{level}/{index}/{ty}/{tx}.{fmt}``.

Every parameter is checked before anything is rendered: the path and query types here (the
plane and format vocabularies, integer bounds, the opacity range), then
:class:`atlas.serve.render.TileSpec` (window, label names) and
:func:`atlas.serve.render.tile_etag` (level, slice, tile row and column and label images
against the series itself; a value outside them is a 404 that names the valid range). A tile is
then answered, in order, by a ``304`` when ``If-None-Match`` names its ETag, by the tile cache,
or by a render in one of the bounded render slots (:mod:`atlas.serve.limits`; a full queue is a
503 with ``Retry-After``). Tiles of a published image never change, so responses carry the
strong ETag of the render module (a hash of the image's metadata and of the normalised
request) and ``Cache-Control: private, max-age=3600`` (private: the data is behind a token).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from atlas.read import Reader
from atlas.serve.access import require_grant
from atlas.serve.context import SeriesEntry, ServeContext
from atlas.serve.grants import Grant
from atlas.serve.limits import RenderSlots
from atlas.serve.planes import Plane
from atlas.serve.render import RenderedTile, TileFormat, TileSpec, render_tile, tile_etag
from atlas.serve.tile_cache import TileCache
from atlas.serve.window import parse_window

__all__ = ["CACHE_CONTROL", "Renderer", "tiles_router"]

CACHE_CONTROL = "private, max-age=3600"

#: ``render(reader, entry, spec) -> RenderedTile`` (default :func:`atlas.serve.render.render_tile`)
Renderer = Callable[[Reader, SeriesEntry, TileSpec], RenderedTile]


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(part.strip().removeprefix("W/") == etag for part in header.split(","))


def tiles_router(
    ctx: ServeContext,
    slots: RenderSlots,
    *,
    renderer: Renderer | None = None,
    cache: TileCache[RenderedTile] | None = None,
) -> APIRouter:
    """The tile route, rendering with ``renderer`` in ``slots`` and caching in ``cache``."""
    render: Renderer = renderer if renderer is not None else render_tile
    tiles: TileCache[RenderedTile] = (
        cache if cache is not None else TileCache(ctx.config.tile_cache_bytes)
    )
    router = APIRouter(prefix="/api", tags=["tiles"])

    @router.get(
        "/series/{series_id}/tiles/{plane}/{level}/{index}/{ty}/{tx}.{fmt}",
        response_class=Response,
        responses={
            200: {"content": {f.media_type: {} for f in TileFormat}, "description": "the tile"},
            304: {"description": "not modified (If-None-Match names the tile's ETag)"},
            503: {"description": "overloaded: retry after Retry-After seconds"},
        },
    )
    async def tile(
        request: Request,
        series_id: str = Path(..., min_length=1, max_length=128),
        plane: Plane = Path(..., description="axial, coronal or sagittal"),
        level: int = Path(..., ge=0, le=64, description="pyramid level"),
        index: int = Path(..., ge=0, le=1 << 31, description="slice along the normal, level 0"),
        ty: int = Path(..., ge=0, le=1 << 31, description="tile row in the level's grid"),
        tx: int = Path(..., ge=0, le=1 << 31, description="tile column in the level's grid"),
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
        spec = TileSpec(
            plane=plane, level=level, index=index, ty=ty, tx=tx, labels=labels,
            window=None if window is None else parse_window(window),
            opacity=opacity, fmt=fmt,
        )  # fmt: skip

        def prepare() -> tuple[SeriesEntry, str]:
            entry = ctx.series(grant, series_id, volume)
            request.state.audit_object = entry.series_id
            request.state.audit_site = entry.site
            return entry, tile_etag(ctx.reader, entry, spec)

        entry, etag = await anyio.to_thread.run_sync(prepare)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        found = tiles.get(etag)
        if found is None:
            async with slots.slot():
                found = await anyio.to_thread.run_sync(render, ctx.reader, entry, spec)
            tiles.put(etag, found)
        request.state.audit_tiles = 1
        return Response(found.data, media_type=found.media_type, headers=headers)

    return router
