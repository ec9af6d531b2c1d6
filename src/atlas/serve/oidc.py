"""Tokens of an external OpenID Connect issuer: :class:`OidcVerifier`.

A federation's login (Keycloak, an institutional IdP, ...) signs access tokens with its own
private key; the server holds the issuer's public keys as a JWKS file (``[serve.oidc]
jwks_file``) and checks each token's signature (RS256 or ES256, the key chosen by the token's
``kid``), issuer, audience and expiry, then maps its claims to the same
:class:`~atlas.serve.grants.Grant` as a token of the server's own.

Claim mapping (names configurable in :class:`~atlas.serve.config.OidcConfig`):

- subject: ``sub``;
- sites: ``atlas_sites``, a list of names or one string of names separated by spaces or
  commas; ``"*"`` covers every site. A token without it is refused: an issuer must say which
  sites a login may read;
- collections: ``atlas_collections``, same forms; absent or ``"*"``: every collection;
- purpose: ``atlas_purpose``, a consent scope (required);
- token id: ``jti`` when it is a plain id, else a hash of it (or of the token, when there is
  no ``jti``), so revocation and the audit trail can name it without holding the token.

The JWKS file is read again when a token names a key id it does not hold and the file
changed since (key rotation), at most every few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from atlas.errors import ConfigError, InvalidInput, Unauthorized
from atlas.privacy.consent import check_purpose
from atlas.serve.config import OidcConfig
from atlas.serve.grants import Grant
from atlas.serve.tokens import MAX_TOKEN_CHARS, check_names, check_times, decode_failure

__all__ = ["ACCEPTED_ALGORITHMS", "OidcVerifier"]

#: the signature algorithms accepted from an external issuer (asymmetric only)
ACCEPTED_ALGORITHMS = ("RS256", "ES256")
_RELOAD_S = 5.0
_JTI = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


def _usable(jwk: Mapping[str, Any]) -> str | None:
    """The algorithm of a signing key of the JWKS, or ``None`` when it is not one we use."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty, alg, crv = jwk.get("kty"), jwk.get("alg"), jwk.get("crv")
    if kty == "RSA" and alg in (None, "RS256"):
        return "RS256"
    if kty == "EC" and crv == "P-256" and alg in (None, "ES256"):
        return "ES256"
    return None


def load_jwks(path: os.PathLike[str] | str) -> dict[str | None, jwt.PyJWK]:
    """The RS256/ES256 public keys of a JWKS file, by key id (``None``: a key without one).

    Raises
    ------
    ConfigError
        The file is missing, not JSON, not a key set, holds a private key, or has no usable
        RS256/ES256 signing key.
    """
    name = os.path.basename(os.fspath(path))
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"[serve.oidc] jwks_file {name} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[serve.oidc] jwks_file {name} is not a JSON file: {exc}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ConfigError(f"[serve.oidc] jwks_file {name} is not a key set (no 'keys' list)")
    out: dict[str | None, jwt.PyJWK] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            raise ConfigError(
                f"[serve.oidc] jwks_file {name} holds a private or secret key; "
                "give the issuer's public keys only"
            )
        alg = _usable(jwk)
        if alg is None:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise ConfigError(
                f"[serve.oidc] jwks_file {name}: key {jwk.get('kid')!r} is not a valid {alg} key"
            ) from None
        kid = jwk.get("kid")
        out[kid if isinstance(kid, str) else None] = key
    if not out:
        raise ConfigError(
            f"[serve.oidc] jwks_file {name} has no RS256 or ES256 signing key "
            f"(accepted: {', '.join(ACCEPTED_ALGORITHMS)})"
        )
    return out


def _names(value: Any, claim: str) -> frozenset[str] | None:
    """A names claim: a list, or one string separated by spaces or commas; ``"*"``: all."""
    if isinstance(value, str):
        items = [v for v in re.split(r"[\s,]+", value) if v]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise Unauthorized(f"token claim {claim!r} must be a list of names or a string")
    if items == ["*"]:
        return None
    try:
        return check_names(claim, items)
    except InvalidInput as exc:
        raise Unauthorized(f"token claim {claim!r} is malformed: {exc.message}") from None


class OidcVerifier:
    """Verify tokens of the issuer ``config`` names and map them to grants.

    Parameters
    ----------
    config
        Issuer, audience, JWKS file and claim names.
    clock
        Seconds since the epoch (``time.time``); tests pass a fake one.
    monotonic
        A monotonic clock for the key set's re-read (``time.monotonic``).

    Raises
    ------
    ConfigError
        The JWKS file cannot be used (see :func:`load_jwks`).
    """

    def __init__(
        self,
        config: OidcConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys = load_jwks(config.jwks_file)
        self._seen = self._signature()
        self._looked = monotonic()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.config.jwks_file)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            if kid not in self._keys and self._monotonic() - self._looked >= _RELOAD_S:
                self._looked = self._monotonic()
                signature = self._signature()
                if signature != self._seen:
                    # a broken file keeps the keys we have; its next change is tried again
                    with contextlib.suppress(ConfigError):
                        self._keys = load_jwks(self.config.jwks_file)
                    self._seen = signature
            keys = self._keys
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        if kid is None:
            raise Unauthorized("token names no key id (kid) and the issuer has several keys")
        if kid not in keys:
            raise Unauthorized("token is signed with a key the issuer's key set does not hold")
        return keys[kid]

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token`` (signature, issuer, audience, expiry)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token is malformed (empty or too long)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise decode_failure(exc) from None
        alg = header.get("alg")
        if alg not in ACCEPTED_ALGORITHMS:
            raise Unauthorized(
                f"token is signed with an algorithm that is not accepted from "
                f"the issuer (accepted: {', '.join(ACCEPTED_ALGORITHMS)})"
            )
        kid = header.get("kid")
        key = self._key(kid if isinstance(kid, str) else None)
        if key.algorithm_name != alg:
            raise Unauthorized("token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                options={"require": ["exp", "iss", "aud"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise decode_failure(exc) from None
        check_times(claims, float(self._clock()))
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > float(self._clock()) + 30:
            raise Unauthorized("token is not valid yet")
        return claims

    def verify(self, token: str) -> Grant:
        """The grant of an external issuer's token.

        Raises
        ------
        Unauthorized
            The token does not verify (signature, key id, algorithm, issuer, audience, expiry)
            or lacks the subject, sites or purpose claim. The message names the reason only.
        """
        claims = self.claims(token)
        cfg = self.config
        subject = claims.get(cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthorized(f"token has no subject claim {cfg.subject_claim!r}")
        if cfg.sites_claim not in claims:
            raise Unauthorized(
                f"token has no {cfg.sites_claim!r} claim: the issuer must name the sites a "
                "login may read ('*' for all)"
            )
        purpose = claims.get(cfg.purpose_claim)
        try:
            purpose = check_purpose(purpose) if isinstance(purpose, str) else None
        except InvalidInput:
            purpose = None
        if purpose is None:
            raise Unauthorized(f"token claim {cfg.purpose_claim!r} is missing or not a consent "
                               "scope")  # fmt: skip
        collections = claims.get(cfg.collections_claim)
        jti = claims.get("jti")
        if isinstance(jti, str) and _JTI.match(jti):
            token_id = jti
        else:
            basis = jti if isinstance(jti, str) and jti else token
            token_id = "oidc-" + hashlib.sha256(basis.encode()).hexdigest()[:24]
        return Grant(
            subject=subject[:128],
            token_id=token_id,
            purpose=purpose,
            sites=_names(claims[cfg.sites_claim], cfg.sites_claim),
            collections=None if collections is None else _names(collections, cfg.collections_claim),
            expires=float(claims["exp"]),
        )
