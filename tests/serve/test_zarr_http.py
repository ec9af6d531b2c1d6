"""Raw Zarr over HTTP from a real uvicorn server: zarr-python, tensorstore, ranges, refusals.

The server runs in a thread on a free loopback port. Grants come from a stand-in
authenticator (a test header names subject and sites; signed tokens are looked up in a table):
the routes only see the :class:`Grant` it returns, as with the real one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tensorstore as ts
import zarr
from fastapi import FastAPI
from tests.serve.rawzarr_support import (
    ORIGIN,
    Live,
    atlas_error,
    local_array,
    parse_multipart,
    running,
    serve_catalog,
)
from tests.stream.plan_catalog import build_catalog
from zarr.storage import FsspecStore

from atlas.errors import (
    AtlasError,
    InvalidInput,
    Unauthorized,
)
from atlas.serve import Grant
from atlas.serve.zarr_http import check_key, zarr_router


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("rawzarr")
    catalog = build_catalog(tmp, {"a": 1, "b": 1}, shape=(40, 96, 96))
    image = {site: next(p for p, s in catalog.site_of.items() if s == site) for site in "ab"}
    yield from serve_catalog(catalog.stores, image, tmp)


def test_zarr_python_opens_the_image_over_http(live: Live) -> None:
    url = f"{live.base}/zarr/a/{live.image['a']}"
    store = FsspecStore.from_url(
        url, read_only=True, storage_options={"headers": {"Authorization": "Bearer test:z:a"}}
    )
    group = zarr.open_group(store, mode="r")
    assert "multiscales" in group.attrs["ome"]
    arr = group["0"]
    assert arr.shape == (40, 96, 96)
    np.testing.assert_array_equal(arr[:], local_array(live))
    np.testing.assert_array_equal(arr[3:35, 10:90, 70:], local_array(live)[3:35, 10:90, 70:])


def test_tensorstore_opens_the_image_over_http(live: Live) -> None:
    spec = {
        "driver": "zarr3",
        "kvstore": {
            "driver": "http",
            "base_url": f"{live.base}/zarr/a/{live.image['a']}/0/",
            "headers": ["Authorization: Bearer test:ts:a"],
        },
    }
    arr = ts.open(spec, read=True).result()
    np.testing.assert_array_equal(arr.read().result(), local_array(live))
    np.testing.assert_array_equal(
        arr[5:9, 60:, :7].read().result(), local_array(live)[5:9, 60:, :7]
    )


def test_signed_path_needs_no_header(live: Live) -> None:
    url = f"{live.base}/signed/tok-a/a/{live.image['a']}"
    group = zarr.open_group(FsspecStore.from_url(url, read_only=True), mode="r")
    np.testing.assert_array_equal(group["0"][:], local_array(live))
    spec = {"driver": "zarr3", "kvstore": {"driver": "http", "base_url": url + "/0/"}}
    np.testing.assert_array_equal(ts.open(spec).result().read().result(), local_array(live))
    # limited to its image: another site's image, the index, a forged token
    assert live.get(f"/signed/tok-a/b/{live.image['b']}/zarr.json", sites=None).status_code == 403
    assert live.get("/signed/tok-a/a/_index/CURRENT", sites=None).status_code == 404
    assert live.get(f"/signed/nope/a/{live.image['a']}/zarr.json", sites=None).status_code == 401
    meta = live.get(f"/signed/tok-a/a/{live.image['a']}/zarr.json", sites=None)
    assert meta.status_code == 200 and meta.headers["referrer-policy"] == "no-referrer"


def test_ome_zarr_py_reads_the_signed_url(live: Live) -> None:
    """ome-zarr-py (a tool that sends no header) reads the pyramid and labels over HTTP."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader as OmeReader

    url = f"{live.base}/signed/tok-a/a/{live.image['a']}"
    location = parse_url(url)
    assert location is not None, "ome-zarr-py did not recognise the series as OME-Zarr"
    nodes = list(OmeReader(location)())
    image = nodes[0]
    np.testing.assert_array_equal(np.asarray(image.data[0]), local_array(live))
    assert "coordinateTransformations" in image.metadata  # the multiscales were parsed
    labels = [n for n in nodes if "/labels/" in str(n.zarr) and n.data]
    assert labels and "color" in labels[0].metadata  # a label image, with its colours
    assert labels[0].data[0].shape == image.data[0].shape


def test_one_inner_chunk_of_a_shard_by_range(live: Live) -> None:
    import google_crc32c  # what zarr's crc32c codec uses
    from numcodecs import Zstd

    level = f"/zarr/a/{live.image['a']}/0"
    meta = live.get(f"{level}/zarr.json").json()
    shard = meta["codecs"][0]["configuration"]
    inner = shard["chunk_shape"]
    per_shard = [s // c for s, c in zip(meta["chunk_grid"]["configuration"]["chunk_shape"],
                                        inner, strict=True)]  # fmt: skip
    n = int(np.prod(per_shard))
    head = live.http.head(f"{level}/c/0/0/0", headers={"Authorization": "Bearer test:x:a"})
    size = int(head.headers["content-length"])
    index = live.get(f"{level}/c/0/0/0", Range=f"bytes=-{16 * n + 4}")
    assert index.status_code == 206
    assert index.headers["content-range"] == f"bytes {size - 16 * n - 4}-{size - 1}/{size}"
    body, crc = index.content[:-4], struct.unpack("<I", index.content[-4:])[0]
    assert google_crc32c.value(body) == crc
    table = np.frombuffer(body, "<u8").reshape(*per_shard, 2)
    offset, nbytes = (int(v) for v in table[1, 0, 1])  # inner chunk (1, 0, 1)
    part = live.get(f"{level}/c/0/0/0", Range=f"bytes={offset}-{offset + nbytes - 1}")
    assert part.status_code == 206 and len(part.content) == nbytes
    payload, crc = part.content[:-4], struct.unpack("<I", part.content[-4:])[0]
    assert google_crc32c.value(payload) == crc
    chunk = np.frombuffer(Zstd().decode(payload), "<i2").reshape(inner)
    z, y, x = (i * c for i, c in zip((1, 0, 1), inner, strict=True))
    want = local_array(live)[z : z + inner[0], y : y + inner[1], x : x + inner[2]]
    np.testing.assert_array_equal(chunk[: want.shape[0], : want.shape[1], : want.shape[2]], want)


def test_headers_etag_head_and_ranges(live: Live) -> None:
    path = f"/zarr/a/{live.image['a']}/0/c/0/0/0"
    whole = live.get(path)
    assert whole.status_code == 200
    data = whole.content
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["cache-control"] == "private, max-age=3600"
    assert whole.headers["content-length"] == str(len(data))
    etag = whole.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    head = live.http.head(path, headers={"Authorization": "Bearer test:alice:a"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data)) and head.headers["etag"] == etag
    again = live.get(path, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert live.get(path, **{"If-None-Match": '"other"'}).status_code == 200
    meta = live.get(f"/zarr/a/{live.image['a']}/zarr.json")
    assert meta.headers["content-type"] == "application/json"
    assert meta.headers["etag"] != etag
    r = live.get(path, Range="bytes=100-199")
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert live.get(path, Range="bytes=-7").content == data[-7:]
    assert live.get(path, Range="bytes=5-5, nonsense").content == data  # malformed: ignored
    assert live.get(path, Range="bytes=0-9", **{"If-Range": '"old"'}).status_code == 200
    assert live.get(path, Range="bytes=0-9", **{"If-Range": etag}).status_code == 206
    multi = live.get(path, Range="bytes=0-9,-5,1000-1099")
    assert multi.status_code == 206
    media, _, boundary = multi.headers["content-type"].partition("; boundary=")
    assert media == "multipart/byteranges"
    parts = parse_multipart(multi.content, boundary)
    assert [p for _, p in parts] == [data[0:10], data[1000:1100], data[-5:]]
    assert parts[2][0]["Content-Range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    bad = live.get(path, Range=f"bytes={len(data)}-")
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    many = live.get(path, Range="bytes=" + ",".join(f"{i}-{i}" for i in range(0, 40, 2)))
    assert many.status_code == 400 and "at most 16" in many.json()["detail"]


def test_refusals(live: Live) -> None:
    img = live.image["a"]
    assert live.get(f"/zarr/a/{img}/zarr.json", sites=None).status_code == 401
    assert live.get(f"/zarr/b/{live.image['b']}/zarr.json", sites="a").status_code == 403
    assert live.get(f"/zarr/b/{live.image['b']}/zarr.json", sites="a,b").status_code == 200
    assert live.get("/zarr/nosuch/x/zarr.json").status_code == 404
    for key in ("_index/CURRENT", "_audit/log.jsonl", "_consent/collections/liver-ct.json",
                "_staging/series/x.parquet", f"{img}/0/c/9/9/9", f"{img}x/zarr.json"):  # fmt: skip
        r = live.get(f"/zarr/a/{key}")
        assert r.status_code == 404, key
        assert "/tmp" not in r.text and "file:" not in r.text  # no server paths
    for path in (f"/zarr/a/{img}/%2e%2e/%2e%2e/_index/CURRENT", f"/zarr/a/{img}/../zarr.json",
                 f"/zarr/a/{img}/..%2f..%2f_index/CURRENT", f"/zarr/a/{img}%5c..%5czarr.json",
                 f"/zarr/a/{img}/%00/zarr.json", "/zarr/a//etc/passwd",
                 f"/zarr/a/{img}/%252e%252e/zarr.json", f"/zarr/a/{img}/./zarr.json"):  # fmt: skip
        status, _, body = live.raw("GET", path)
        assert status == 400 and b"raw key" in body, (path, status, body)
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        status, headers, _ = live.raw(method, f"/zarr/a/{img}/zarr.json")
        assert status == 405 and headers["allow"] == "GET, HEAD, OPTIONS", method
        status, headers, _ = live.raw(method, f"/signed/tok-a/a/{img}/zarr.json")
        assert status == 405, method
    status, headers, _ = live.raw("OPTIONS", f"/zarr/a/{img}/zarr.json")
    assert status == 204 and headers["allow"] == "GET, HEAD, OPTIONS"


def test_cors_preflight_and_exposed_headers(live: Live) -> None:
    path = f"/zarr/a/{live.image['a']}/0/c/0/0/0"
    pre = live.http.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, range, if-none-match",
    })  # fmt: skip
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    allowed = pre.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("authorization", "range", "if-none-match"))
    r = live.get(path, Range="bytes=0-3", Origin=ORIGIN)
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = r.headers["access-control-expose-headers"].lower()
    assert all(h in exposed for h in ("content-range", "content-length", "etag"))
    other = live.http.options(path, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"
    })  # fmt: skip
    assert other.status_code == 400


def test_check_key() -> None:
    assert check_key("a/b/zarr.json") == "a/b/zarr.json"
    assert check_key("a/b/") == "a/b"
    for bad in ("", "/a", "a//b", "a/../b", "a/./b", "..", "a\\b", "a\x00b", "a%2eb", "c:x",
                "x" * 2000):  # fmt: skip
        with pytest.raises(InvalidInput):
            check_key(bad)


def test_a_range_reads_only_its_bytes_from_the_store(live: Live, monkeypatch) -> None:
    store = live.ctx.stores["a"]
    asked: list[tuple[str, int, int]] = []
    real = store.read_range

    def spy(key: str, start: int, stop: int) -> bytes:
        asked.append((key, start, stop))
        return real(key, start, stop)

    monkeypatch.setattr(store, "read_range", spy)
    key = f"{live.image['a']}/0/c/0/0/0"
    r = live.get(f"/zarr/a/{key}", Range="bytes=1000-1099,-16")
    assert r.status_code == 206
    size = store.stat(key).size
    assert sorted(asked) == [(key, 1000, 1100), (key, size - 16, size)]
    asked.clear()
    monkeypatch.setattr("atlas.serve.zarr_http.BLOCK", 64 << 10)
    assert live.get(f"/zarr/a/{key}").content == real(key, 0, size)
    assert all(stop - start <= 64 << 10 for _, start, stop in asked) and len(asked) > 1


def test_an_authenticator_object_verifies_both_forms(live: Live) -> None:
    """The app passes its Authenticator: ``authenticate(authorization, signed_token)``."""

    class Auth:
        def authenticate(self, authorization: str | None, signed_token: str | None) -> Grant:
            if signed_token == "sig-1":
                return Grant("s", "j1", "research", path_prefix=("a", live.image["a"]))
            if authorization == "Bearer real":
                return Grant("r", "j2", "research", sites=frozenset({"a"}))
            raise Unauthorized("no valid token")

    app = FastAPI()
    app.add_exception_handler(AtlasError, atlas_error)
    app.include_router(zarr_router(live.ctx, Auth()))
    key = f"a/{live.image['a']}/zarr.json"
    with running(app) as base, httpx.Client(base_url=base) as http:
        assert http.get(f"/zarr/{key}", headers={"Authorization": "Bearer real"}).is_success
        assert http.get(f"/signed/sig-1/{key}").is_success
        assert http.get(f"/zarr/{key}").status_code == 401
        assert http.get(f"/signed/sig-2/{key}").status_code == 401
        assert http.get(f"/zarr/b/{live.image['b']}/zarr.json",
                        headers={"Authorization": "Bearer real"}).status_code == 403  # fmt: skip
