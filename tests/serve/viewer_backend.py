"""A test-only server of the contract's catalog and tile routes, for the viewer's browser tests.

It serves real data: the series of a real catalog (through :class:`ServeContext`), slices read
with :class:`atlas.read.Reader` at the requested pyramid level, resampled to the physical
aspect ratio, windowed, label overlays in their OME-Zarr colours, cut into 256-px tiles and
encoded as PNG with Pillow. The viewer's own routes are the package's :func:`viewer_router`.
It stands in for the server's application while that lands; its routes follow the contract
(paths, parameters, JSON shapes, one-line JSON errors), not the production code.
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

from atlas.errors import AtlasError, Forbidden, InvalidInput, NotFound, Unauthorized
from atlas.ome import OmeImage, OmeLabel
from atlas.read import ReadRequest, Region
from atlas.serve import Grant, ServeContext
from atlas.serve.viewer import viewer_router

TILE = 256
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}
PRESETS = {
    "ct-soft-tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
STATUS = ((Unauthorized, 401), (Forbidden, 403), (NotFound, 404), (InvalidInput, 400))


def _in_plane(plane: str, shape: tuple[int, ...], spacing: tuple[float, ...]) -> dict[str, Any]:
    """Width/height (px, aspect-corrected) of a plane of a level of ``shape``/``spacing``."""
    z, y, x = shape
    sz, sy, sx = spacing
    cols, rows = {"axial": ((x, sx), (y, sy)), "coronal": ((x, sx), (z, sz))}.get(
        plane, ((y, sy), (z, sz))
    )
    mm = min(cols[1], rows[1])
    width = max(1, round(cols[0] * cols[1] / mm))
    height = max(1, round(rows[0] * rows[1] / mm))
    return {"width": width, "height": height, "mm_per_px": mm}


def viewer_test_app(ctx: ServeContext, tokens: dict[str, Grant]) -> FastAPI:
    """The app: the bearer tokens it accepts are the keys of ``tokens``, each its grant."""
    app = FastAPI()
    app.include_router(viewer_router())

    @app.exception_handler(AtlasError)
    def _errors(request: Request, exc: AtlasError) -> JSONResponse:
        status = next((s for cls, s in STATUS if isinstance(exc, cls)), 503)
        kind = type(exc).__name__.lower()
        return JSONResponse({"error": kind, "detail": str(exc).splitlines()[0]}, status)

    def auth(request: Request) -> Grant:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Unauthorized("no bearer token given")
        grant = tokens.get(header[len("Bearer ") :])
        if grant is None:
            raise Unauthorized("token not valid")
        return grant

    def rows(grant: Grant) -> list[dict[str, Any]]:
        table = ctx.atlas(grant.purpose).series.to_arrow().value
        out = [] if table is None else table.to_pylist()
        return sorted(
            (r for r in out if grant.allows(r["site"], r["collection"])),
            key=lambda r: (r["series_id"], r["volume"]),
        )

    def summary(grant: Grant, r: dict[str, Any]) -> dict[str, Any]:
        info = ctx.reader.info(ctx.series(grant, r["series_id"], r["volume"]).ref())
        node = ctx.reader.node(ctx.series(grant, r["series_id"], r["volume"]).ref())
        assert isinstance(node, OmeImage)
        return {
            "series_id": r["series_id"],
            "volume": r["volume"],
            "site": r["site"],
            "collection": r["collection"],
            "subject_id": r["subject_id"],
            "modality": r.get("modality"),
            "body_part": r.get("body_part"),
            "size": list(info.shape[-3:]),
            "spacing": list(info.spacing),
            "levels": len(info.levels),
            "labels": list(node.metadata.labels),
            "regularly_spaced": True,
        }

    @app.get("/api/collections")
    def collections(request: Request) -> dict[str, Any]:
        grant = auth(request)
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows(grant):
            groups.setdefault(r["collection"], []).append(r)
        return {
            "collections": [
                {
                    "collection": c,
                    "sites": sorted({r["site"] for r in rs}),
                    "series": len(rs),
                    "subjects": len({r["subject_id"] for r in rs}),
                }
                for c, rs in sorted(groups.items())
            ]
        }

    @app.get("/api/series")
    def series(request: Request, q: str = "", limit: int = 50) -> dict[str, Any]:
        grant = auth(request)
        query = ctx.atlas(grant.purpose).series
        if q:
            query = query.where(q)
        table = query.to_arrow().value
        found = {
            (r["series_id"], r["volume"]) for r in ([] if table is None else table.to_pylist())
        }
        items = [summary(grant, r) for r in rows(grant) if (r["series_id"], r["volume"]) in found]
        return {"items": items[:limit], "next": None}

    @app.get("/api/series/{series_id}")
    def one(request: Request, series_id: str, volume: int = 0) -> dict[str, Any]:
        grant = auth(request)
        entry = ctx.series(grant, series_id, volume)
        info = ctx.reader.info(entry.ref())
        node = ctx.reader.node(entry.ref())
        assert isinstance(node, OmeImage)
        labels = []
        for name in node.metadata.labels:
            label = ctx.reader.node(entry.ref(name))
            assert isinstance(label, OmeLabel)
            li = label.info
            labels.append(
                {
                    "name": name,
                    "values": [
                        {
                            "value": v,
                            "name": li.names.get(v, f"value {v}"),
                            "color": "#{:02x}{:02x}{:02x}{:02x}".format(
                                *li.colors.get(v, (255, 255, 0, 255))
                            ),
                        }
                        for v in sorted(set(li.names) | set(li.colors))
                        if v != 0
                    ],
                }
            )
        planes: dict[str, Any] = {}
        for plane, axis in PLANES.items():
            levels = []
            for lv in range(len(info.levels)):
                g = _in_plane(plane, info.level_shape(lv)[-3:], info.level_spacing(lv))
                g.update(
                    level=lv,
                    slices=info.level_shape(lv)[-3:][axis],
                    tile_rows=math.ceil(g["height"] / TILE),
                    tile_cols=math.ceil(g["width"] / TILE),
                )
                levels.append(g)
            planes[plane] = {"slices": info.shape[-3:][axis], "levels": levels}
        row = next(r for r in rows(grant) if r["series_id"] == series_id and r["volume"] == volume)
        return {
            **summary(grant, row),
            "labels": labels,
            "header": {"modality": row.get("modality")},
            "geometry": {
                "affine": info.affine.tolist(),
                "direction": info.direction.tolist(),
                "spacing": list(info.spacing),
            },
            "levels": [
                {
                    "level": i,
                    "shape": list(info.level_shape(i)),
                    "spacing": list(info.level_spacing(i)),
                }
                for i in range(len(info.levels))
            ],
            "planes": planes,
            "windows": ["ct-soft-tissue", "lung", "bone", "brain", "auto"],
            "default_window": "ct-soft-tissue",
        }

    @app.get("/api/series/{series_id}/tiles/{plane}/{level}/{index}/{ty}/{tx}.{fmt}")
    def tile(
        request: Request,
        series_id: str,
        plane: str,
        level: int,
        index: int,
        ty: int,
        tx: int,
        fmt: str,
        volume: int = 0,
        window: str = "ct-soft-tissue",
        labels: str = "all",
        opacity: float = 0.5,
    ) -> Response:
        grant = auth(request)
        if plane not in PLANES or fmt != "png":
            raise InvalidInput(f"plane {plane!r} / format {fmt!r} not served here")
        entry = ctx.series(grant, series_id, volume)
        info = ctx.reader.info(entry.ref())
        axis = PLANES[plane]
        if not 0 <= index < info.shape[-3:][axis]:
            raise InvalidInput(f"slice {index} outside 0..{info.shape[-3:][axis] - 1}")
        shape = info.level_shape(level)[-3:]
        at = min(shape[axis] - 1, index // info.spatial_factors(level)[axis])
        region = Region.plane(axis, at, shape)

        def cut(ref: Any) -> np.ndarray:
            data = ctx.reader.read(ReadRequest(ref, region, level)).data
            data = np.squeeze(data, axis=axis)
            return data if plane == "axial" else data[::-1]  # head at the top

        g = _in_plane(plane, shape, info.level_spacing(level))
        grey = cut(entry.ref()).astype(np.float64)
        if window in PRESETS:
            w, c = PRESETS[window]
        elif window == "auto":
            lo, hi = np.percentile(grey, [1, 99])
            w, c = max(hi - lo, 1.0), (hi + lo) / 2
        else:
            w, c = (float(v) for v in window.split(","))
        img = np.clip((grey - (c - w / 2)) / w, 0, 1) * 255
        rgb = np.repeat(img[..., None], 3, axis=2)
        node = ctx.reader.node(entry.ref())
        assert isinstance(node, OmeImage)
        for name in node.metadata.labels if labels != "none" else ():
            lab = cut(entry.ref(name))
            label = ctx.reader.node(entry.ref(name))
            assert isinstance(label, OmeLabel)
            for v in np.unique(lab):
                if v == 0:
                    continue
                r, gg, b, a = label.info.colors.get(int(v), (255, 255, 0, 255))
                alpha = opacity * a / 255
                m = lab == v
                rgb[m] = rgb[m] * (1 - alpha) + np.array([r, gg, b]) * alpha
        pic = Image.fromarray(rgb.astype(np.uint8)).resize(
            (g["width"], g["height"]), Image.BILINEAR
        )
        box = (
            tx * TILE,
            ty * TILE,
            min(g["width"], (tx + 1) * TILE),
            min(g["height"], (ty + 1) * TILE),
        )
        if box[0] >= box[2] or box[1] >= box[3]:
            raise InvalidInput(f"tile {ty},{tx} outside the grid")
        buf = io.BytesIO()
        pic.crop(box).save(buf, "PNG")
        body = buf.getvalue()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return Response(
            body,
            media_type="image/png",
            headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
        )

    return app
