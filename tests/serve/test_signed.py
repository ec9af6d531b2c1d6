"""Signed URLs: one image's prefix, the asking grant's identity, short-lived, path-safe."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from atlas.errors import Forbidden, InvalidInput, Unauthorized
from atlas.serve.grants import Grant
from atlas.serve.signed import MAX_SIGNED_TTL_S, SignedUrls
from atlas.serve.tokens import TokenIssuer, load_server_key

NOW = 1_800_000_000.0
IMAGE = "liver-ct/pbewrfygio/2.25.2156/2.25.2114.ome.zarr"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key(tmp_path) -> bytes:
    return load_server_key(tmp_path / "serve.key")


def test_issue_and_verify(key) -> None:
    clock = Clock()
    urls = SignedUrls(key, default_ttl_s=600, clock=clock)
    asker = Grant("alice", "tok-1", "research", sites=frozenset({"a", "b"}), expires=NOW + 3600)
    signed = urls.issue(asker, "a", "/" + IMAGE + "/")
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", signed.token)  # safe in a path as it is
    assert quote(signed.token, safe="") == signed.token
    assert signed.url == f"/signed/{signed.token}/a/{IMAGE}/"
    assert signed.expires == NOW + 600
    grant = urls.verify(signed.token)
    assert grant == Grant(
        subject="alice",
        token_id="tok-1",  # the asking token's id: revoking it revokes the URL
        purpose="research",
        sites=frozenset({"a"}),
        collections=None,
        expires=NOW + 600,
        path_prefix=("a", IMAGE),
    )
    assert signed.token_id != "tok-1"
    # the grant covers the image and keys inside it, nothing else
    assert grant.allows("a", "liver-ct", IMAGE)
    assert grant.allows("a", "liver-ct", IMAGE + "/0/c/0/0/0")
    assert not grant.allows("a", "liver-ct", IMAGE[:-3])
    assert not grant.allows("a", "liver-ct", IMAGE + "x/0")
    assert not grant.allows("b", "liver-ct", IMAGE)
    assert not grant.allows("a", "liver-ct", "liver-ct/other.ome.zarr")
    assert not grant.allows("a", "liver-ct", None)


def test_lifetime_bounds_and_expiry(key) -> None:
    clock = Clock()
    urls = SignedUrls(key, default_ttl_s=600, clock=clock)
    asker = Grant("alice", "tok-1", "research", expires=NOW + 120)
    signed = urls.issue(asker, "a", IMAGE, ttl_s=600)
    assert signed.expires == NOW + 120  # never outlives the grant that asked
    clock.now += 119
    assert urls.verify(signed.token).expires == NOW + 120
    clock.now += 1
    with pytest.raises(Unauthorized, match=r"^signed URL expired$"):
        urls.verify(signed.token)
    long = Grant("alice", "tok-1", "research")
    for ttl in (0, -1, MAX_SIGNED_TTL_S + 1, float("nan")):
        with pytest.raises(InvalidInput, match="lifetime"):
            urls.issue(long, "a", IMAGE, ttl_s=ttl)
    with pytest.raises(Forbidden, match="expired"):
        urls.issue(Grant("alice", "old", "research", expires=clock.now - 1), "a", IMAGE)


def test_issue_refusals(key) -> None:
    urls = SignedUrls(key)
    only_b = Grant("bob", "tok-b", "research", sites=frozenset({"b"}))
    with pytest.raises(Forbidden, match="does not cover site 'a'"):
        urls.issue(only_b, "a", IMAGE)
    for bad in ("", "/", "../secret", "a/../../b", "a//b", "a/./b", "a\\b", "a/\x00"):
        with pytest.raises(InvalidInput, match="image path"):
            urls.issue(Grant("alice", "t", "research"), "a", bad)
    with pytest.raises(InvalidInput, match="site"):
        urls.issue(Grant("alice", "t", "research"), "a/b", IMAGE)
    # a signed URL's grant may only sign its own image again (a key prefix inside it)
    own = urls.verify(urls.issue(Grant("alice", "t", "research"), "a", IMAGE).token)
    assert urls.issue(own, "a", IMAGE).url.endswith(IMAGE + "/")
    with pytest.raises(Forbidden, match="its own image"):
        urls.issue(own, "a", "liver-ct/other.ome.zarr")


def test_tokens_are_not_interchangeable(key, tmp_path) -> None:
    urls = SignedUrls(key)
    issuer = TokenIssuer(key)
    bearer = issuer.create("alice", purpose="research")
    with pytest.raises(Unauthorized, match="signed URL signature does not verify"):
        urls.verify(bearer)
    signed = urls.issue(Grant("alice", "t", "research"), "a", IMAGE).token
    with pytest.raises(Unauthorized, match="signature does not verify"):
        issuer.verify(signed)
    other = SignedUrls(load_server_key(tmp_path / "other.key"))
    with pytest.raises(Unauthorized, match="signature does not verify"):
        other.verify(signed)
    head, body, sig = signed.split(".")
    with pytest.raises(Unauthorized, match="signature does not verify"):
        urls.verify(f"{head}.{body[:-2]}AA.{sig}")
    for bad in ("", "abc", "a.b", "a/b.c.d", "x" * 9000):
        with pytest.raises(Unauthorized, match="malformed"):
            urls.verify(bad)
