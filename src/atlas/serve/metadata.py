"""The metadata document of one series volume: what a viewer needs before its first tile.

Geometry and levels come from :meth:`atlas.read.Reader.info` (one cached metadata read per
image), label names and colours from each label image's OME-Zarr ``image-label`` metadata,
the header summary from the image's stored de-identified header (:mod:`atlas.serve.header`),
and the tile grid of each plane and level from :mod:`atlas.serve.planes`.
"""

from __future__ import annotations

from typing import Any

from atlas.ome import OmeImage, OmeLabel
from atlas.ome.metadata import default_color
from atlas.read import ImageInfo
from atlas.serve.context import SeriesEntry, ServeContext
from atlas.serve.header import header_summary
from atlas.serve.planes import Plane, plane_levels
from atlas.serve.window import Preset, default_window

__all__ = ["WINDOWS", "describe_series", "label_legend"]

#: window names the tile route accepts (besides an explicit ``W,C``)
WINDOWS = tuple(p.value for p in Preset)


def _hex(value: int, rgba: tuple[int, ...] | None) -> str:
    """``#rrggbbaa``; a value without a stored colour gets the one tiles draw it in."""
    r, g, b, a = (tuple(int(c) for c in rgba) + (255,) * 4)[:4] if rgba else default_color(value)
    return f"#{r:02x}{g:02x}{b:02x}{a:02x}"


def label_legend(label: OmeLabel) -> dict[str, Any]:
    """A label image's values with their names and ``#rrggbbaa`` colours."""
    li = label.info
    values = sorted(set(li.names) | set(li.colors))
    return {
        "name": li.name,
        "values": [
            {"value": v, "name": li.names.get(v, f"value {v}"), "color": _hex(v, li.colors.get(v))}
            for v in values
            if v != 0
        ],
    }


def _planes(info: ImageInfo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for plane in Plane:
        geoms = plane_levels(info, plane)
        out[plane.value] = {"slices": geoms[0].slices, "levels": [g.to_json() for g in geoms]}
    return out


def describe_series(
    ctx: ServeContext, entry: SeriesEntry, summary: dict[str, Any]
) -> dict[str, Any]:
    """The ``GET /api/series/{id}`` document (summary, header, geometry, levels, planes, labels).

    Raises
    ------
    NotFound, StoreUnavailable, CorruptData
        The image cannot be opened (as :meth:`atlas.read.Reader.info` says).
    """
    ref = entry.ref()
    info = ctx.reader.info(ref)
    node = ctx.reader.node(ref)
    assert isinstance(node, OmeImage)
    meta = node.metadata
    labels = []
    for name in meta.labels:
        label = ctx.reader.node(entry.ref(name))
        assert isinstance(label, OmeLabel)
        labels.append(label_legend(label))
    modality = (summary.get("modality") or meta.modality or "").upper()
    return {
        **summary,
        "labels": labels,
        "header": header_summary(meta.extra.get("dicom"), entry.row),
        "geometry": {
            "affine": info.affine.tolist(),
            "direction": info.direction.tolist(),
            "spacing": list(info.spacing),
        },
        "levels": [
            {"level": i, "shape": list(level.shape), "spacing": list(info.level_spacing(i))}
            for i, level in enumerate(info.levels)
        ],
        "planes": _planes(info),
        "windows": list(WINDOWS),
        "default_window": default_window(modality).value,
        "zarr": f"/zarr/{entry.site}/{entry.image_path}/",
    }
