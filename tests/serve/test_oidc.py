"""Tokens of an external OpenID Connect issuer, signed as the issuer would (RS256, ES256)."""

from __future__ import annotations

import json
import os

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from atlas.errors import ConfigError, Unauthorized
from atlas.serve.config import OidcConfig
from atlas.serve.oidc import OidcVerifier, load_jwks

ISSUER = "https://login.example.org/realms/atlas"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _jwk(private, kid: str) -> dict:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid, "use": "sig"}


def _write(path, *keys: dict) -> None:
    path.write_text(json.dumps({"keys": list(keys)}))


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def issuer(tmp_path, rsa_key, ec_key):
    """The JWKS file of an issuer with one RSA and one P-256 key, and its config."""
    jwks = tmp_path / "jwks.json"
    _write(jwks, _jwk(rsa_key, "rsa-1"), _jwk(ec_key, "ec-1"))
    return OidcConfig(issuer=ISSUER, audience="atlas", jwks_file=jwks)


def _claims(**extra) -> dict:
    claims = {
        "iss": ISSUER,
        "aud": ["atlas", "account"],
        "sub": "6f1c0d9e-user",
        "jti": "kc-123",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "atlas_sites": ["a"],
        "atlas_collections": "liver-ct lung-ct",
        "atlas_purpose": "research",
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key, claims: dict, kid: str | None = "rsa-1", alg: str = "RS256") -> str:
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def test_rs256_and_es256_tokens_map_to_grants(issuer, rsa_key, ec_key) -> None:
    verifier = OidcVerifier(issuer, clock=Clock())
    grant = verifier.verify(_sign(rsa_key, _claims()))
    assert grant.subject == "6f1c0d9e-user"
    assert grant.token_id == "kc-123"
    assert grant.purpose == "research"
    assert grant.sites == frozenset({"a"})
    assert grant.collections == frozenset({"liver-ct", "lung-ct"})
    assert grant.expires == NOW + 300
    assert grant.path_prefix is None
    es = verifier.verify(_sign(ec_key, _claims(atlas_sites="*", aud="atlas"), "ec-1", "ES256"))
    assert es.sites is None  # '*': every site
    none = verifier.verify(_sign(rsa_key, _claims(atlas_collections=None, atlas_sites="a,b")))
    assert none.collections is None and none.sites == frozenset({"a", "b"})


def test_token_id_without_a_plain_jti_is_a_hash(issuer, rsa_key) -> None:
    verifier = OidcVerifier(issuer, clock=Clock())
    token = _sign(rsa_key, _claims(jti=None))
    grant = verifier.verify(token)
    assert grant.token_id.startswith("oidc-") and len(grant.token_id) == 29
    assert grant.token_id == verifier.verify(token).token_id  # stable, so it can be revoked
    odd = verifier.verify(_sign(rsa_key, _claims(jti="urn:uuid with spaces")))
    assert odd.token_id.startswith("oidc-")


def test_refusals(issuer, rsa_key, ec_key, tmp_path) -> None:
    clock = Clock()
    verifier = OidcVerifier(issuer, clock=clock)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases = {
        _sign(stranger, _claims()): "signature does not verify",
        _sign(rsa_key, _claims(aud="other-app")): "not for this audience",
        _sign(rsa_key, _claims(aud=None)): "'aud' is missing",
        _sign(rsa_key, _claims(iss="https://evil.example.org")): "wrong issuer",
        _sign(rsa_key, _claims(exp=int(NOW) - 1)): "expired",
        _sign(rsa_key, _claims(), kid="rsa-9"): "key the issuer's key set does not hold",
        _sign(rsa_key, _claims(), kid=None): "names no key id",
        _sign(ec_key, _claims(), kid="rsa-1", alg="ES256"): "does not match its key",
        _sign(rsa_key, _claims(atlas_sites=None)): "no 'atlas_sites' claim",
        _sign(rsa_key, _claims(atlas_purpose=None)): "'atlas_purpose' is missing",
        _sign(rsa_key, _claims(atlas_purpose="marketing")): "not a consent scope",
        _sign(rsa_key, _claims(atlas_sites=[1, 2])): "must be a list of names",
        _sign(rsa_key, _claims(atlas_sites=["../b"])): "malformed",
        _sign(rsa_key, _claims(sub=None)): "no subject claim",
        # HS256 with the public key as the secret (the algorithm-confusion attack)
        _hs256_with(public_pem): "algorithm that is not accepted",
        jwt.encode(_claims(), None, algorithm="none"): "algorithm that is not accepted",
        "garbage": "malformed",
    }
    for token, reason in cases.items():
        with pytest.raises(Unauthorized, match=reason) as info:
            verifier.verify(token)
        assert token not in str(info.value)
    # expiry follows the injected clock
    token = _sign(rsa_key, _claims())
    clock.now = NOW + 300
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)


def _hs256_with(secret: bytes) -> str:
    """An HS256 token keyed with ``secret`` (PyJWT refuses a PEM key, so sign by hand)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(_claims()).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_jwks_file_refusals(tmp_path, rsa_key) -> None:
    path = tmp_path / "jwks.json"
    with pytest.raises(ConfigError, match=r"jwks\.json does not exist"):
        load_jwks(path)
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not a JSON file"):
        load_jwks(path)
    path.write_text(json.dumps({"no": "keys"}))
    with pytest.raises(ConfigError, match="not a key set"):
        load_jwks(path)
    private = json.loads(RSAAlgorithm.to_jwk(rsa_key))
    _write(path, {**private, "kid": "k"})
    with pytest.raises(ConfigError, match="private or secret key"):
        load_jwks(path)
    _write(path, {"kty": "oct", "k": "c2VjcmV0"})
    with pytest.raises(ConfigError, match="private or secret key"):
        load_jwks(path)
    _write(path, {**_jwk(rsa_key, "enc"), "use": "enc"})
    with pytest.raises(ConfigError, match="no RS256 or ES256 signing key"):
        load_jwks(path)
    _write(path, {"kty": "RSA", "kid": "bad", "n": "AQAB", "e": "AQAB", "alg": "RS256"})
    with pytest.raises(ConfigError, match="'bad' is not a valid RS256 key"):
        load_jwks(path)


def test_a_rotated_key_is_picked_up_from_the_file(issuer, rsa_key, tmp_path) -> None:
    clock, mono = Clock(), Clock(0.0)
    verifier = OidcVerifier(issuer, clock=clock, monotonic=mono)
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = _sign(new, _claims(), kid="rsa-2")
    _write(issuer.jwks_file, _jwk(rsa_key, "rsa-1"), _jwk(new, "rsa-2"))
    os.utime(issuer.jwks_file, ns=(1, 10**18))  # a different modification time for sure
    with pytest.raises(Unauthorized, match="does not hold"):
        verifier.verify(token)  # the file is looked at no more often than every 5 s
    mono.now = 5.0
    assert verifier.verify(token).subject == "6f1c0d9e-user"
    # a broken file later keeps the keys already loaded
    issuer.jwks_file.write_text("{broken")
    mono.now = 20.0
    with pytest.raises(Unauthorized, match="does not hold"):  # re-read, failed, not raised
        verifier.verify(_sign(rsa_key, _claims(), kid="rsa-3"))
    assert verifier.verify(_sign(rsa_key, _claims())).token_id == "kc-123"
    assert verifier.verify(token).token_id == "kc-123"
