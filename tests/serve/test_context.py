"""The server's shared context: series lookups checked against the grant and the purpose."""

from __future__ import annotations

import pytest
from tests.stream.plan_catalog import build_catalog

from atlas.errors import ConfigError, Forbidden, InvalidInput, NotFound
from atlas.serve import Grant, ServeConfig, ServeContext, load_serve_config


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-ctx")
    catalog = build_catalog(tmp, {"a": 1, "b": 1})
    cfg = ServeConfig(
        stores=catalog.stores, key_file=tmp / "k", audit_log=tmp / "a", revocations=tmp / "r"
    )
    context = ServeContext(cfg)
    yield context
    context.close()


def _rows(ctx):
    return ctx.atlas("research").series.to_arrow().value.to_pylist()


def test_series_lookup_and_scope(ctx) -> None:
    row = next(r for r in _rows(ctx) if r["site"] == "a")
    entry = ctx.series(Grant("alice", "t1", "research"), row["series_id"])
    assert (entry.site, entry.image_path) == ("a", row["image_path"].strip("/"))
    only_b = Grant("bob", "t2", "research", sites=frozenset({"b"}))
    with pytest.raises(Forbidden, match="'t2'"):
        ctx.series(only_b, row["series_id"])
    other = Grant("carol", "t3", "research", collections=frozenset({"brain-mr"}))
    with pytest.raises(Forbidden):
        ctx.series(other, row["series_id"])
    with pytest.raises(NotFound, match="nope"):
        ctx.series(Grant("alice", "t1", "research"), "nope")
    with pytest.raises(InvalidInput):
        ctx.series(Grant("alice", "t1", "research"), row["series_id"], volume=-1)


def test_a_purpose_without_consent_sees_nothing(ctx) -> None:
    row = _rows(ctx)[0]
    with pytest.raises(NotFound):
        ctx.series(Grant("eve", "t4", "commercial"), row["series_id"])


def test_raw_keys_map_to_their_image_only(ctx) -> None:
    g = Grant("alice", "t1", "research")
    row = next(r for r in _rows(ctx) if r["site"] == "b")
    path = row["image_path"].strip("/")
    entry, rest = ctx.image_for_key(g, "b", f"{path}/0/zarr.json")
    assert (entry.series_id, rest) == (row["series_id"], "0/zarr.json")
    for key in ("_index/CURRENT", "_audit/x", f"{path}x/zarr.json", "liver-ct"):
        with pytest.raises(NotFound):
            ctx.image_for_key(g, "b", key)
    with pytest.raises(Forbidden):
        ctx.image_for_key(Grant("bob", "t2", "research", sites=frozenset({"a"})), "b", path)
    signed = Grant("n", "s1", "research", path_prefix=("b", path))
    assert ctx.image_for_key(signed, "b", f"{path}/labels/zarr.json")[1] == "labels/zarr.json"
    other = next(r for r in _rows(ctx) if r["site"] == "a")["image_path"].strip("/")
    with pytest.raises(Forbidden):
        ctx.image_for_key(Grant("n", "s1", "research", path_prefix=("b", path)), "a", other)


def test_serve_config_file(tmp_path, ctx) -> None:
    f = tmp_path / "serve.toml"
    f.write_text('[serve]\ntile_cache_mb = 8\nqueue_depth = 3\nkey_file = "keys/k"\n')
    cfg = load_serve_config(f, ctx.stores)
    assert cfg.tile_cache_bytes == 8 << 20 and cfg.queue_depth == 3
    assert cfg.key_file == tmp_path / "keys" / "k" and cfg.audit_log == tmp_path / "audit.jsonl"
    f.write_text("[serve]\nqueue_dept = 3\n")
    with pytest.raises(ConfigError, match="queue_dept"):
        load_serve_config(f, ctx.stores)
    f.write_text("[serve]\nrender_concurrency = 0\n")
    with pytest.raises(ConfigError, match="render_concurrency"):
        load_serve_config(f, ctx.stores)
    with pytest.raises(ConfigError, match="at least one site"):
        load_serve_config(None, {})
