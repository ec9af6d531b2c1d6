"""Access on every route: no token 401, outside the grant 403, site A never reads site B.

The app's API description is walked, so a route added later without a grant check fails here.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from tests.serve.app_support import make_served

from atlas.serve.app import create_app

OPEN = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = make_served(tmp_path_factory.mktemp("app-access"), revocation_poll_s=0.5)
    app = create_app(s.ctx)
    with TestClient(app) as client:
        rows = s.ctx.atlas("research").series.to_arrow().value.to_pylist()
        by_site = {r["site"]: r for r in rows}
        yield client, s, app, by_site
    s.ctx.close()


def _protected_routes(app):
    """Every (method, path template) of the API description but the open ones."""
    for path, ops in sorted(app.openapi()["paths"].items()):
        if path in OPEN or path.startswith("/viewer"):
            continue
        for method in sorted(m.upper() for m in ops if m.upper() not in ("HEAD", "OPTIONS")):
            yield method, path


def _url(path: str, row: dict) -> str:
    values = {
        "series_id": row["series_id"], "plane": "axial", "level": "0", "index": "1", "ty": "0",
        "tx": "0", "fmt": "png", "site": row["site"], "key": row["image_path"] + "/zarr.json",
        "key:path": row["image_path"] + "/zarr.json", "token": "x",
    }  # fmt: skip
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


def _call(client, method, path, row, headers):
    body = {"series_id": row["series_id"], "volume": 0} if method == "POST" else None
    return client.request(method, _url(path, row), headers=headers, json=body)


def test_every_route_needs_a_token(served) -> None:
    client, _s, app, by_site = served
    routes = list(_protected_routes(app))
    assert ("GET", "/api/series") in routes and ("POST", "/api/signed-urls") in routes
    for method, path in routes:
        if path.startswith("/signed/"):
            continue  # the path token is the credential there (tested with the signed URLs)
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
            r = _call(client, method, path, by_site["a"], headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"] == "unauthorized"


def test_site_a_never_reads_site_b_by_any_route(served) -> None:
    client, s, app, by_site = served
    b = by_site["b"]
    for method, path in _protected_routes(app):
        if path.startswith("/signed/"):
            continue
        r = _call(client, method, path, b, s.h("site-a"))
        if path in ("/api/series", "/api/collections"):
            assert r.status_code == 200
            assert b["series_id"] not in r.text and '"b"' not in r.text
            continue
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
        assert b["image_path"] not in r.text
        # and the same route does serve site A's own series to this token
        own = _call(client, method, path, by_site["a"], s.h("site-a"))
        assert own.status_code == 200, (method, path, own.text)


def test_other_collection_is_forbidden(served) -> None:
    client, s, app, by_site = served
    a = by_site["a"]
    for method, path in _protected_routes(app):
        if path.startswith("/signed/") or path in ("/api/series", "/api/collections"):
            continue
        r = _call(client, method, path, a, s.h("other-coll"))
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden"
    assert client.get("/api/series", headers=s.h("other-coll")).json()["items"] == []


def test_a_subject_without_the_purpose_is_invisible(served) -> None:
    client, s, app, by_site = served
    for row in by_site.values():
        for method, path in _protected_routes(app):
            if path.startswith("/signed/"):
                continue
            r = _call(client, method, path, row, s.h("commercial"))
            if path in ("/api/series", "/api/collections"):
                assert r.status_code == 200 and row["series_id"] not in r.text
            else:
                assert r.status_code == 404, (method, path, r.text)
    assert client.get("/api/collections", headers=s.h("commercial")).json()["collections"] == []


def test_revoked_token_is_refused_on_the_next_poll(served) -> None:
    client, s, _app, _by_site = served
    from atlas.serve.tokens import TokenIssuer

    token = TokenIssuer(s.auth.key).create("mallory", purpose="research", token_id="tok-revoke")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/collections", headers=headers).status_code == 200
    s.ctx.config.revocations.write_text("tok-revoke\n")
    time.sleep(0.6)  # revocation takes effect within the poll interval
    r = client.get("/api/collections", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_signed_url_is_issued_for_a_covered_series_only(served) -> None:
    client, s, _app, by_site = served
    a = by_site["a"]
    r = client.post("/api/signed-urls", json={"series_id": a["series_id"], "ttl_s": 60},
                    headers=s.h("site-a"))  # fmt: skip
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["url"].startswith("/signed/") and doc["url"].endswith(f"/a/{a['image_path']}/")
    b = by_site["b"]
    r = client.post("/api/signed-urls", json={"series_id": b["series_id"]}, headers=s.h("site-a"))
    assert r.status_code == 403
    for bad in ({"series_id": a["series_id"], "ttl_s": -1}, {"series_id": ""}, {"volume": 0},
                {"series_id": a["series_id"], "ttl_s": 1e9}):  # fmt: skip
        r = client.post("/api/signed-urls", json=bad, headers=s.h("site-a"))
        assert r.status_code in (400, 422) and r.json()["error"] == "invalid_input", bad


def test_signed_url_reads_its_image_only(served) -> None:
    client, s, _app, by_site = served
    a, b = by_site["a"], by_site["b"]
    url = client.post("/api/signed-urls", json={"series_id": a["series_id"]},
                      headers=s.h("all")).json()["url"]  # fmt: skip
    r = client.get(url + "zarr.json")
    assert r.status_code == 200 and r.json()["node_type"] == "group"
    token = url.split("/")[2]
    # the token opens nothing outside its image: not site b, not the index, not as a bearer
    b_url = url.replace(f"/a/{a['image_path']}/", f"/b/{b['image_path']}/")
    assert client.get(b_url + "zarr.json").status_code == 403
    assert client.get(url.split("/a/")[0] + "/a/_index/CURRENT").status_code in (403, 404)
    r = client.get("/api/series", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert client.get(url.replace(token, token[:-4] + "AAAA") + "zarr.json").status_code == 401
    assert token not in s.audit.path.read_text()
    seen = [r for r in s.audit.records() if r["route"].startswith("GET /signed/")]
    assert seen and all(r["object_id"] in (a["series_id"], None) for r in seen)
