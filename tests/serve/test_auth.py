"""The Authenticator: header parsing, the three kinds of token, revocation, log redaction."""

from __future__ import annotations

import json
import logging
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from atlas.errors import ConfigError, Unauthorized
from atlas.serve.auth import Authenticator, RedactTokens, redact, redact_path, redact_text
from atlas.serve.config import OidcConfig, ServeConfig
from atlas.serve.grants import Grant
from atlas.storage import open_store

ISSUER = "https://login.example.org/realms/atlas"
IMAGE = "liver-ct/s1/2.25.1/2.25.2.ome.zarr"


def _config(tmp_path, **extra) -> ServeConfig:
    return ServeConfig(
        stores={"a": open_store(str(tmp_path / "site-a"), site="a")},
        key_file=tmp_path / "serve.key",
        audit_log=tmp_path / "audit.jsonl",
        revocations=tmp_path / "revoked.txt",
        **extra,
    )


@pytest.fixture
def auth(tmp_path) -> Authenticator:
    return Authenticator(_config(tmp_path, revocation_poll_s=0.1))


def test_creates_the_key_and_accepts_its_tokens(tmp_path, auth) -> None:
    key_file = tmp_path / "serve.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert auth.key == key_file.read_bytes()
    token = auth.tokens.create("alice", purpose="research", sites=["a"])
    for header in (f"Bearer {token}", f"bearer {token}", f"  Bearer   {token} "):
        grant = auth.authenticate(header)
        assert (grant.subject, grant.sites, grant.purpose) == ("alice", frozenset({"a"}),
                                                               "research")  # fmt: skip
    # a second server process with the same config accepts the same tokens
    assert Authenticator(_config(tmp_path)).authenticate(f"Bearer {token}") == grant


def test_missing_or_malformed_credentials(auth) -> None:
    for header in (None, "", "   ", "Bearer", "Bearer  "):
        with pytest.raises(Unauthorized, match=r"^missing bearer token$"):
            auth.authenticate(header)
    with pytest.raises(Unauthorized, match="must be 'Bearer <token>'"):
        auth.authenticate("Basic YWxpY2U6cGFzcw==")
    with pytest.raises(Unauthorized, match="malformed") as info:
        auth.authenticate("Bearer not-a-jwt-secret-value")
    assert "not-a-jwt-secret-value" not in str(info.value)
    with pytest.raises(Unauthorized, match="too long"):
        auth.authenticate("Bearer " + "x" * 10_000)


def test_revocation_takes_effect_without_a_restart(tmp_path, auth) -> None:
    token = auth.tokens.create("alice", purpose="research")
    grant = auth.authenticate(f"Bearer {token}")
    signed = auth.signed_urls.issue(grant, "a", IMAGE)
    assert auth.authenticate(None, signed.token).path_prefix == ("a", IMAGE)
    # revoked by another process (a second Revocations over the same file, as the CLI does)
    from atlas.serve.revocation import Revocations

    Revocations(tmp_path / "revoked.txt").revoke(grant.token_id)
    start = time.monotonic()
    while True:
        try:
            auth.authenticate(f"Bearer {token}")
        except Unauthorized as exc:
            assert "has been revoked" in str(exc)
            break
        assert time.monotonic() - start < 10
        time.sleep(0.01)
    assert time.monotonic() - start < 1.0  # poll 0.1 s
    with pytest.raises(Unauthorized, match="has been revoked"):  # its signed URLs too
        auth.authenticate(None, signed.token)


def test_signed_token_is_the_credential_on_signed_routes(auth) -> None:
    grant = Grant("alice", "t1", "research", expires=time.time() + 60)
    signed = auth.signed_urls.issue(grant, "a", IMAGE, ttl_s=30)
    got = auth.authenticate(None, signed.token)
    assert got.path_prefix == ("a", IMAGE) and got.token_id == "t1"
    # a bearer token in the path is not a signed URL, a signed URL is not a bearer token
    bearer = auth.tokens.create("alice", purpose="research")
    with pytest.raises(Unauthorized, match="signed URL signature"):
        auth.authenticate(f"Bearer {bearer}", bearer)
    with pytest.raises(Unauthorized, match="signature does not verify"):
        auth.authenticate(f"Bearer {signed.token}")


def test_external_tokens_need_an_issuer(tmp_path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(key.public_key())),
                                          "kid": "k1"}]}))  # fmt: skip
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "atlas", "sub": "u1", "jti": "ext-1", "iat": now,
              "exp": now + 60, "atlas_sites": "a", "atlas_purpose": "ai-training"}  # fmt: skip
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    plain = Authenticator(_config(tmp_path))
    with pytest.raises(Unauthorized, match=r"external issuer are not accepted"):
        plain.authenticate(f"Bearer {token}")
    oidc = OidcConfig(issuer=ISSUER, audience="atlas", jwks_file=jwks)
    both = Authenticator(_config(tmp_path, oidc=oidc, revocation_poll_s=0.05))
    grant = both.authenticate(f"Bearer {token}")
    assert (grant.subject, grant.token_id, grant.purpose) == ("u1", "ext-1", "ai-training")
    own = both.tokens.create("alice", purpose="research")
    assert both.authenticate(f"Bearer {own}").subject == "alice"  # own tokens still accepted
    both.revocations.revoke("ext-1")
    with pytest.raises(Unauthorized, match="'ext-1' has been revoked"):
        both.authenticate(f"Bearer {token}")
    jwks.unlink()
    with pytest.raises(ConfigError, match=r"jwks\.json does not exist"):
        Authenticator(_config(tmp_path, oidc=oidc))


def test_a_world_readable_key_stops_the_server(tmp_path) -> None:
    Authenticator(_config(tmp_path))
    (tmp_path / "serve.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable or writable by other users"):
        Authenticator(_config(tmp_path))


def test_redaction_for_logs(auth) -> None:
    token = auth.tokens.create("alice", purpose="research")
    assert redact(token) == token[:6] + "…"
    assert redact(None) == "-" and redact("") == "-"
    signed = auth.signed_urls.issue(Grant("alice", "t", "research"), "a", IMAGE)
    path = redact_path(signed.url + "0/zarr.json")
    assert path == f"/signed/{signed.token[:6]}…/a/{IMAGE}/0/zarr.json"
    text = redact_text(f"header Bearer {token} then {signed.token} and /signed/{signed.token}/a")
    assert token not in text and signed.token not in text
    assert redact_text(redact_text(text)) == text  # redacting twice changes nothing
    assert redact_text("GET /api/series/2.25.123.ome.zarr") == "GET /api/series/2.25.123.ome.zarr"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", signed.url + "0/zarr.json", "1.1", 200),
                               None)  # fmt: skip
    assert RedactTokens().filter(record)
    line = record.getMessage()
    assert signed.token not in line and f"/signed/{signed.token[:6]}…/a/" in line
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"auth {token}", None, None)
    RedactTokens().filter(record)
    assert token not in record.getMessage()


def test_cached_grants_still_expire_and_the_cache_is_bounded(tmp_path, monkeypatch) -> None:
    import atlas.serve.auth as auth_module

    now = [1_800_000_000.0]
    auth = Authenticator(_config(tmp_path), clock=lambda: now[0])
    token = auth.tokens.create("alice", purpose="research", ttl_s=60)
    assert auth.authenticate(f"Bearer {token}").subject == "alice"  # verified, then cached
    now[0] += 59
    assert auth.authenticate(f"Bearer {token}").subject == "alice"
    now[0] += 1
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        auth.authenticate(f"Bearer {token}")
    monkeypatch.setattr(auth_module, "GRANT_CACHE_ENTRIES", 3)
    tokens = [auth.tokens.create(f"u{i}", purpose="research") for i in range(5)]
    for t in tokens:
        auth.authenticate(f"Bearer {t}")
    assert len(auth._cache) == 3
    # a tampered token is verified (and refused), never answered from the cache
    head, body, sig = tokens[-1].split(".")
    with pytest.raises(Unauthorized, match="signature"):
        auth.authenticate(f"Bearer {head}.{body}.{sig[:-3]}AAA")
