"""The metadata document of one series volume: what a viewer needs before its first tile.

Geometry and levels come from :meth:`atlas.read.Reader.info` (one cached metadata read per
image), label names and colours from each label image's OME-Zarr ``image-label`` metadata,
the header summary from the image's stored de-identified header (:mod:`atlas.serve.header`),
and the tile grid of each plane and level from :mod:`atlas.serve.planes`.
"""

from __future__ import annotations

from typing import Any

from atlas.ome import OmeImage, OmeLabel
from atlas.read import ImageInfo
from atlas.serve.context import SeriesEntry, ServeContext
from atlas.serve.header import header_summary

__all__ = ["WINDOWS", "describe_series", "label_legend"]

#: window names the tile route accepts (besides an explicit ``W,C``)
WINDOWS = ("ct-soft-tissue", "lung", "bone", "brain", "auto")

#: a label value without a stored colour is shown in this one (opaque yellow)
DEFAULT_COLOR = (255, 255, 0, 255)


def _hex(rgba: tuple[int, ...] | None) -> str:
    r, g, b, a = (tuple(int(c) for c in rgba) + (255,) * 4)[:4] if rgba else DEFAULT_COLOR
    return f"#{r:02x}{g:02x}{b:02x}{a:02x}"


def label_legend(label: OmeLabel) -> dict[str, Any]:
    """A label image's values with their names and ``#rrggbbaa`` colours."""
    li = label.info
    values = sorted(set(li.names) | set(li.colors))
    return {
        "name": li.name,
        "values": [
            {"value": v, "name": li.names.get(v, f"value {v}"), "color": _hex(li.colors.get(v))}
            for v in values
            if v != 0
        ],
    }


def _planes(info: ImageInfo) -> dict[str, Any]:
    try:
        from atlas.serve.planes import Plane, plane_geometry
    except ImportError:  # rendering not in this build yet: slice counts only
        z, y, x = info.shape[-3:]
        return {
            p: {"slices": n, "levels": []}
            for p, n in (("axial", z), ("coronal", y), ("sagittal", x))
        }

    out: dict[str, Any] = {}
    for plane in Plane:
        geoms = [plane_geometry(info, plane, level) for level in range(len(info.levels))]
        out[plane.value] = {
            "slices": geoms[0].slices,
            "levels": [g.as_dict() for g in geoms],
        }
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
        "default_window": "ct-soft-tissue" if modality == "CT" else "auto",
        "zarr": f"/zarr/{entry.site}/{entry.image_path}/",
    }
