"""The app's catalog routes, error bodies, CORS and audit records (in-process client)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from tests.serve.app_support import GreyRenderer, make_served

from atlas.serve.app import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = make_served(tmp_path_factory.mktemp("app-catalog"))
    app = create_app(s.ctx, renderer=GreyRenderer())
    with TestClient(app) as client:
        client.h = s.h
        client.tokens = s.tokens
        client.key_file = s.ctx.config.key_file
        yield client, s.audit, s.catalog
    s.ctx.close()


def _all_series(client, headers, q=None, limit=1):
    items, cursor, pages = [], None, 0
    while True:
        params = {
            "limit": limit,
            **({"q": q} if q else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        r = client.get("/api/series", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return items, pages


def _first(client, site):
    r = client.get("/api/series", params={"q": f'site == "{site}"'}, headers=client.h("all"))
    return r.json()["items"][0]


def test_collections_count_series_and_subjects(served) -> None:
    client, _, _ = served
    r = client.get("/api/collections", headers=client.h("all"))
    assert r.status_code == 200
    assert r.json()["collections"] == [
        {"collection": "liver-ct", "sites": ["a", "b"], "series": 2, "subjects": 2}
    ]
    only_a = client.get("/api/collections", headers=client.h("site-a")).json()["collections"]
    assert only_a == [{"collection": "liver-ct", "sites": ["a"], "series": 1, "subjects": 1}]
    assert (
        client.get("/api/collections", headers=client.h("other-coll")).json()["collections"] == []
    )


def test_series_pages_are_stable_and_complete(served) -> None:
    client, _, catalog = served
    items, pages = _all_series(client, client.h("all"), limit=1)
    assert pages == 2 and len(items) == 2
    keys = [(i["series_id"], i["volume"]) for i in items]
    assert keys == sorted(keys)
    whole = client.get("/api/series", params={"limit": 50}, headers=client.h("all")).json()
    assert whole["items"] == items and whole["next"] is None
    one = items[0]
    assert {one["site"], items[1]["site"]} == {"a", "b"}
    assert one["size"] == [16, 32, 32] and one["levels"] >= 1 and one["labels"]
    assert one["modality"] == "CT" and one["regularly_spaced"] is True
    assert one["subject_id"] in set(catalog.subject.values())


def test_series_filter_uses_the_query_language(served) -> None:
    client, _, _ = served
    items, _ = _all_series(client, client.h("all"), q='site == "b" and modality == "CT"', limit=5)
    assert [i["site"] for i in items] == ["b"]
    assert _all_series(client, client.h("all"), q='modality == "MR"')[0] == []
    r = client.get("/api/series", params={"q": "size_z >"}, headers=client.h("all"))
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_input" and "position" in body["detail"]
    assert "\n" not in r.text
    r = client.get("/api/series", params={"q": "nonsense_column == 1"}, headers=client.h("all"))
    assert r.status_code == 400 and "nonsense_column" in r.json()["detail"]


def test_cursor_is_opaque_checked_and_bound_to_its_filter(served) -> None:
    client, _, _ = served
    first = client.get("/api/series", params={"limit": 1}, headers=client.h("all")).json()
    cursor = first["next"]
    r = client.get("/api/series", params={"limit": 1, "cursor": cursor, "q": 'modality == "CT"'},
                   headers=client.h("all"))  # fmt: skip
    assert r.status_code == 400 and "another filter" in r.json()["detail"]
    for bad in ("x", "!!!!", cursor[:-3], "eyJzIjoxfQ"):
        r = client.get("/api/series", params={"cursor": bad}, headers=client.h("all"))
        assert r.status_code == 400 and r.json()["error"] == "invalid_input", bad
    for limit in (0, -1, 501, "ten"):
        r = client.get("/api/series", params={"limit": limit}, headers=client.h("all"))
        assert r.status_code == 422 and "limit" in r.json()["detail"]


def test_series_metadata(served) -> None:
    client, _, _ = served
    item = _first(client, "a")
    r = client.get(f"/api/series/{item['series_id']}", headers=client.h("all"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["series_id"] == item["series_id"] and doc["site"] == "a"
    assert doc["geometry"]["spacing"] == pytest.approx([1.5, 0.7, 0.7])
    assert len(doc["geometry"]["affine"]) == 4 and doc["levels"][0]["shape"] == [16, 32, 32]
    assert doc["planes"]["axial"]["slices"] == 16 and doc["planes"]["coronal"]["slices"] == 32
    (label,) = doc["labels"]
    names = {v["name"]: v["color"] for v in label["values"]}
    assert names == {"liver": "#a55028ff", "liver tumour": "#ff2828ff"}
    assert doc["default_window"] == "ct-soft-tissue" and "lung" in doc["windows"]
    header = doc["header"]
    assert header["Modality"] == "CT" and header["BodyPartExamined"] == "ABDOMEN"
    assert header["PatientIdentityRemoved"] == "YES"
    text = json.dumps(header)
    # no UID, date, name or retained oddity of the stored header reaches the summary
    assert "2.25." not in text and "2016" not in text and "CNRY" not in text
    assert "P-a-0" not in r.text  # the original patient id of the synthetic study
    r = client.get(
        f"/api/series/{item['series_id']}", params={"volume": 3}, headers=client.h("all")
    )
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get("/api/series/nope", headers=client.h("all")).status_code == 404
    r = client.get("/api/series/x", params={"volume": -1}, headers=client.h("all"))
    assert r.status_code == 422


def test_errors_are_one_line_json(served) -> None:
    client, _, _ = served
    for method, url, status in (
        ("GET", "/api/nothing-here", 404),
        ("DELETE", "/api/series", 405),
        ("GET", "/api/series", 401),
    ):
        r = client.request(method, url)
        assert r.status_code == status
        assert set(r.json()) == {"error", "detail"} and "\n" not in r.text
    r = client.get("/api/series")
    assert r.headers["www-authenticate"] == "Bearer"


def test_cors_and_preflight(served) -> None:
    client, _, _ = served
    r = client.options(
        "/api/series",
        headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "https://viewer.example")
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = client.get("/api/series", headers={"Origin": "https://viewer.example"})
    assert r.status_code == 401 and "access-control-allow-origin" in r.headers


def test_every_request_is_audited(served) -> None:
    client, audit, _ = served
    before = len(list(audit.records()))
    client.get("/api/collections", headers=client.h("all"))
    client.get("/api/collections")
    item = _first(client, "a")
    client.get(f"/api/series/{item['series_id']}", headers=client.h("site-b"))
    client.get(f"/api/series/{item['series_id']}", headers=client.h("all"))
    client.get("/healthz")
    new = list(audit.records())[before:]
    events = [(r["event"], r["outcome"], r["subject"]) for r in new]
    assert events == [
        ("query", 0, "alice"),
        ("security-alert", 4, None),
        ("query", 0, "alice"),
        ("security-alert", 4, "bea"),
        ("instances-accessed", 0, "alice"),
    ]
    last = new[-1]
    assert last["object_id"] == item["series_id"] and last["site"] == "a"
    assert last["route"] == "GET /api/series/{series_id}" and last["nbytes"] > 0
    assert last["token_id"] == "tok-all" and last["purpose"] == "research"
    assert last["client"] == "testclient"
    assert new[0]["action"] == "E" and last["action"] == "R"
    assert audit.verify().ok
    # no token is ever written, only its id
    text = audit.path.read_text()
    assert all(token not in text for token in client.tokens.values())


def test_healthz_and_openapi_need_no_token(served) -> None:
    client, _, _ = served
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/api/series" in spec["paths"] and "/api/series/{series_id}" in spec["paths"]


def test_a_request_refused_before_its_handler_is_audited_by_its_route(served) -> None:
    client, audit, _ = served
    before = len(list(audit.records()))
    item = _first(client, "a")
    client.get(f"/api/series/{item['series_id']}/tiles/oblique/0/1/0/0.png",
               headers=client.h("all"))  # fmt: skip
    client.get("/api/series", params={"limit": 0}, headers=client.h("all"))
    new = list(audit.records())[before + 1 :]
    assert [(r["event"], r["outcome"]) for r in new] == [
        ("instances-accessed", 4), ("query", 4)
    ]  # fmt: skip


def test_a_site_that_does_not_answer_makes_results_partial(served, tmp_path) -> None:
    from atlas.serve import ServeConfig, ServeContext
    from atlas.storage import open_store

    client, _, catalog = served
    (tmp_path / "c").mkdir()
    stores = {**catalog.stores, "c": open_store(tmp_path / "c", site="c")}  # no index at all
    cfg = ServeConfig(stores=stores, key_file=client.key_file, audit_log=tmp_path / "audit.jsonl",
                      revocations=tmp_path / "revoked.txt")  # fmt: skip
    ctx = ServeContext(cfg)
    try:
        with TestClient(create_app(ctx)) as other:
            r = other.get("/api/series", headers=client.h("all"))
            assert r.status_code == 200 and r.json()["missing_sites"] == ["c"]
            assert len(r.json()["items"]) == 2
            r = other.get("/api/collections", headers=client.h("all"))
            assert r.json()["missing_sites"] == ["c"]
            # a token without site c is told nothing about it
            assert (
                other.get("/api/series", headers=client.h("site-a")).json()["missing_sites"] == []
            )
            r = other.get("/api/series/2.25.1", headers=client.h("all"))
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json()["error"] == "store_unavailable" and "'c'" in r.json()["detail"]
    finally:
        ctx.close()
