"""Tiles of a real ingested series, found through the server's context with a grant."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from tests.stream.plan_catalog import build_catalog

from atlas.serve import Grant, ServeConfig, ServeContext
from atlas.serve.planes import plane_geometry
from atlas.serve.render import TileSpec, render_tile


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render-catalog")
    catalog = build_catalog(tmp, {"a": 1, "b": 1})
    cfg = ServeConfig(
        stores=catalog.stores, key_file=tmp / "k", audit_log=tmp / "a", revocations=tmp / "r"
    )
    ctx = ServeContext(cfg)
    yield ctx, catalog
    ctx.close()


def test_labelled_voxels_show_their_segment_colour(served) -> None:
    ctx, catalog = served
    grant = Grant("alice", "t1", "research")
    rows = ctx.atlas("research").series.to_arrow().value.to_pylist()
    for row in rows:
        entry = ctx.series(grant, row["series_id"])
        truth = catalog.truth[entry.image_path]
        (label,) = ctx.reader.node(entry.ref()).label_names
        colours = ctx.reader.node(entry.ref(label)).info.colors
        z = int(np.argmax((truth == 2).sum(axis=(1, 2))))  # the slice with most tumour
        spec = TileSpec("axial", 0, z, 0, 0, labels="all", opacity=1, fmt="png")
        tile = render_tile(ctx.reader, entry, spec)
        got = np.asarray(Image.open(io.BytesIO(tile.data)))
        info = ctx.reader.info(entry.ref())
        geom = plane_geometry(info, "axial", 0)
        assert got.shape == (geom.height, geom.width, 3) == (32, 32, 3)  # 0.7 mm both ways
        for value in (1, 2):
            ys, xs = np.nonzero(truth[z] == value)
            assert ys.size, value
            assert (got[ys, xs] == colours[value][:3]).all()  # alpha 255, opacity 1
        ys, xs = np.nonzero(truth[z] == 0)
        assert (got[ys, xs, 0] == got[ys, xs, 1]).all()  # grey outside the labels
        # head up: the coronal picture's top row is the last slice
        co = render_tile(
            ctx.reader, entry, TileSpec("coronal", 0, 16, 0, 0, labels="all", opacity=1)
        )
        pic = np.asarray(Image.open(io.BytesIO(co.data)))
        height = plane_geometry(info, "coronal", 0).height
        assert pic.shape[:2] == (height, 32) and height == round(16 * 1.5 / 0.7)
        zs, xs = np.nonzero(truth[:, 16, :] == 2)
        if zs.size:
            rows_px = height - 1 - np.floor((zs + 0.5) * 1.5 / 0.7).astype(int)
            assert (pic[rows_px, xs] == colours[2][:3]).all()


def test_a_remembered_series_lookup_still_checks_the_grant(served) -> None:
    from atlas.errors import Forbidden

    ctx, _ = served
    row = next(
        r for r in ctx.atlas("research").series.to_arrow().value.to_pylist() if r["site"] == "a"
    )
    first = ctx.series(Grant("alice", "t1", "research"), row["series_id"])
    assert ctx.series(Grant("alice", "t1", "research"), row["series_id"]) is first  # remembered
    with pytest.raises(Forbidden):
        ctx.series(Grant("bob", "t2", "research", sites=frozenset({"b"})), row["series_id"])
