"""The tile route with the real renderer: headers, ETag and 304, cache, every bad parameter."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.serve.app_support import make_served

from atlas.serve.app import create_app
from atlas.serve.render import RenderedTile
from atlas.serve.tile_cache import TileCache


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = make_served(tmp_path_factory.mktemp("app-tiles"))
    cache: TileCache[RenderedTile] = TileCache(8 << 20)
    app = create_app(s.ctx, tile_cache=cache)
    with TestClient(app) as client:
        row = next(r for r in s.ctx.atlas("research").series.to_arrow().value.to_pylist()
                   if r["site"] == "a")  # fmt: skip
        yield client, s, cache, f"/api/series/{row['series_id']}/tiles"
    s.ctx.close()


def _png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def test_tile_headers_etag_and_304(served) -> None:
    client, s, cache, base = served
    r = client.get(f"{base}/axial/0/8/0/0.png", headers=s.h("all"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "private, max-age=3600"
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert _png(r.content).shape[:2] == (32, 32)
    again = client.get(f"{base}/axial/0/8/0/0.png", headers={**s.h("all"), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get(f"{base}/axial/0/9/0/0.png", headers={**s.h("all"), "If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    hits = cache.stats().hits
    assert client.get(f"{base}/axial/0/8/0/0.png", headers=s.h("all")).content == r.content
    assert cache.stats().hits == hits + 1
    # a 304 still needs a token that covers the series
    r = client.get(f"{base}/axial/0/8/0/0.png", headers={**s.h("site-b"), "If-None-Match": etag})
    assert r.status_code == 403


def test_planes_formats_windows_labels(served) -> None:
    client, s, _, base = served
    coronal = client.get(f"{base}/coronal/0/16/0/0.png", headers=s.h("all"))
    # 16 slices of 1.5 mm over 32 px of 0.7 mm: rows stretched to the physical aspect
    assert coronal.status_code == 200 and _png(coronal.content).shape[:2] == (34, 32)
    for fmt, media in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        r = client.get(f"{base}/sagittal/0/16/0/0.{fmt}", headers=s.h("all"))
        assert r.status_code == 200 and r.headers["content-type"] == media
    lung = client.get(f"{base}/axial/0/8/0/0.png", params={"window": "lung", "labels": "none"},
                      headers=s.h("all"))  # fmt: skip
    bone = client.get(f"{base}/axial/0/8/0/0.png", params={"window": "1800,400", "labels": "none"},
                      headers=s.h("all"))  # fmt: skip
    assert lung.status_code == bone.status_code == 200
    assert not np.array_equal(_png(lung.content), _png(bone.content))
    plain = client.get(f"{base}/axial/0/8/0/0.png", params={"labels": "none"}, headers=s.h("all"))
    drawn = client.get(f"{base}/axial/0/8/0/0.png", params={"labels": "all", "opacity": 1},
                       headers=s.h("all"))  # fmt: skip
    assert plain.headers["etag"] != drawn.headers["etag"]
    assert not np.array_equal(_png(plain.content), _png(drawn.content))


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("oblique/0/8/0/0.png", {}, 422),
        ("axial/0/8/0/0.gif", {}, 422),
        ("axial/-1/8/0/0.png", {}, 422),
        ("axial/9/8/0/0.png", {}, 404),
        ("axial/0/16/0/0.png", {}, 404),
        ("axial/0/99999999999/0/0.png", {}, 422),
        ("axial/0/8/1/0.png", {}, 404),
        ("axial/0/8/0/7.png", {}, 404),
        ("axial/0/x/0/0.png", {}, 422),
        ("axial/0/8/0/0.png", {"window": "0,40"}, 400),
        ("axial/0/8/0/0.png", {"window": "wide"}, 400),
        ("axial/0/8/0/0.png", {"window": "nan,1"}, 400),
        ("axial/0/8/0/0.png", {"labels": "../etc"}, 400),
        ("axial/0/8/0/0.png", {"labels": "no-such-label"}, 404),
        ("axial/0/8/0/0.png", {"opacity": "2"}, 422),
        ("axial/0/8/0/0.png", {"opacity": "nan"}, 422),
        ("axial/0/8/0/0.png", {"volume": "-3"}, 422),
        ("axial/0/8/0/0.png", {"volume": "5"}, 404),
    ],
)
def test_bad_parameters_are_4xx_with_a_clear_line(served, path, params, status) -> None:
    client, s, _, base = served
    r = client.get(f"{base}/{path}", params=params, headers=s.h("all"))
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"] and "\n" not in r.text
