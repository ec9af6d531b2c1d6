"""Bearer tokens signed by the server key: :class:`TokenIssuer` (HS256 JWTs via PyJWT).

A token carries who it was issued to (``sub``), its id (``jti``, what revocation and the audit
trail name), when it was issued and expires (``iat``, ``exp``), the sites and collections it
covers (absent or ``null``: all of them), the consent purpose it works under and
``iss = "atlas"``. :meth:`TokenIssuer.verify` turns a token back into a
:class:`~atlas.serve.grants.Grant` or raises :class:`~atlas.errors.Unauthorized` naming why
(bad signature, expired, malformed), never quoting the token.

The server key is one file of 32 random bytes (:func:`load_server_key`), created with mode
0600 when absent and refused when other users may read it. Each use gets its own key derived
from it (:func:`derive_key`), so a token, a signed URL and an audit hash can never stand in
for one another.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import re
import secrets
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt

from atlas.errors import ConfigError, InvalidInput, Unauthorized
from atlas.privacy.consent import check_purpose
from atlas.serve.grants import Grant

__all__ = [
    "ISSUER",
    "KEY_BYTES",
    "LEEWAY_S",
    "MAX_TOKEN_CHARS",
    "MAX_TTL_S",
    "TokenIssuer",
    "check_names",
    "check_times",
    "check_ttl",
    "decode_failure",
    "derive_key",
    "load_server_key",
]

#: the ``iss`` of every token the server signs
ISSUER = "atlas"
#: size of a created server key
KEY_BYTES = 32
#: longest token accepted (a token is a few hundred characters; more is not one of ours)
MAX_TOKEN_CHARS = 8192
#: longest lifetime of a token (30 days): longer-lived access is a new token, not a long one
MAX_TTL_S = 30 * 24 * 3600.0
#: clock difference tolerated between an issuer and the server for ``iat``
LEEWAY_S = 30.0
_ALGORITHM = "HS256"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")
_REQUIRED = ("sub", "jti", "iat", "exp", "purpose", "iss")


def derive_key(key: bytes, label: str) -> bytes:
    """The key of one use (``"token"``, ``"signed-url"``, ``"audit"``) derived from the server key.

    HMAC-SHA256 of the label under the server key: knowing one derived key reveals neither the
    server key nor another use's key.
    """
    return hmac.new(key, f"atlas/{label}/v1".encode(), hashlib.sha256).digest()


def _create_key(path: Path) -> None:
    """Write a fresh key to ``path`` in one step: a full 0600 file appears, or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        # the link fails if another process created the key first: theirs is used
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_server_key(path: str | Path, *, create: bool = True) -> bytes:
    """The server's signing key from ``path`` (created, 32 random bytes, mode 0600, if absent).

    Parameters
    ----------
    path
        The key file.
    create
        Create the key when the file is absent (the server does; ``atlas token show`` and
        ``atlas audit verify`` do not, since a new key would verify nothing).

    Raises
    ------
    ConfigError
        The file is absent (and ``create`` is false), its folder does not exist, it is not a
        regular file, other users may read or write it, or it holds fewer than 32 bytes.
    """
    p = Path(path)
    if not p.exists():
        if not create:
            raise ConfigError(f"server key file {p.name} does not exist; `atlas token create` "
                              "or `atlas serve` creates it")  # fmt: skip
        if not p.parent.is_dir():
            raise ConfigError(f"the folder of the server key file {p.name} does not exist")
        _create_key(p)
    info = p.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"server key {p.name} is not a regular file")
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(
            f"server key file {p.name} is readable or writable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {p.name}`"
        )
    key = p.read_bytes()
    if len(key) < KEY_BYTES:
        raise ConfigError(f"server key file {p.name} holds {len(key)} bytes; at least "
                          f"{KEY_BYTES} are needed (delete it to have a new one made)")  # fmt: skip
    return key


def check_names(kind: str, names: Iterable[str] | None) -> frozenset[str] | None:
    """Validated site or collection names (``None``: all of them).

    Raises
    ------
    InvalidInput
        A name is empty or has characters other than letters, digits, ``.``, ``_``, ``-``.
    """
    if names is None:
        return None
    out = frozenset(str(n) for n in names)
    bad = sorted(n for n in out if not _NAME.match(n))
    if bad:
        raise InvalidInput(f"{kind} names must be letters, digits, '.', '_' or '-': {bad}")
    return out


def _check_token_id(token_id: str) -> str:
    if not isinstance(token_id, str) or not _NAME.match(token_id):
        raise InvalidInput("a token id is 1-128 letters, digits, '.', '_' or '-'")
    return token_id


def _check_subject(subject: str) -> str:
    if not isinstance(subject, str) or not _SUBJECT.match(subject):
        raise InvalidInput(
            "a token subject is 1-128 letters, digits or . _ @ : + - (a user or service name)"
        )
    return subject


def check_ttl(ttl_s: float, *, limit: float = MAX_TTL_S) -> float:
    """A lifetime in seconds: positive, finite and at most ``limit``."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s):
        raise InvalidInput(f"a lifetime must be a number of seconds, got {ttl_s!r}")
    if ttl_s <= 0 or ttl_s > limit:
        raise InvalidInput(
            f"a lifetime must be more than 0 and at most {limit:.0f} s, got {ttl_s:g}"
        )
    return float(ttl_s)


def _names_claim(claims: Mapping[str, Any], name: str) -> frozenset[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Unauthorized(f"token is malformed: claim {name!r} must be a list of names")
    try:
        return check_names(name, value)
    except InvalidInput as exc:
        raise Unauthorized(f"token is malformed: {exc.message}") from None


def decode_failure(exc: jwt.PyJWTError, what: str = "token") -> Unauthorized:
    """The :class:`Unauthorized` for a PyJWT error, naming the reason (never the token)."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return Unauthorized(f"{what} signature does not verify")
    if isinstance(exc, jwt.ExpiredSignatureError):
        return Unauthorized(f"{what} expired")
    if isinstance(exc, jwt.InvalidIssuerError):
        return Unauthorized(f"{what} has the wrong issuer")
    if isinstance(exc, jwt.InvalidAudienceError):
        return Unauthorized(f"{what} is not for this audience")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthorized(f"{what} is malformed: claim {exc.claim!r} is missing")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return Unauthorized(f"{what} is signed with an algorithm that is not accepted")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return Unauthorized(f"{what} is not valid yet")
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return Unauthorized(f"{what} is malformed: claim 'sub' must be a string")
    if isinstance(exc, jwt.exceptions.InvalidJTIError):
        return Unauthorized(f"{what} is malformed: claim 'jti' must be a string")
    if isinstance(exc, jwt.exceptions.InvalidIssuedAtError):
        return Unauthorized(f"{what} is malformed: claim 'iat' must be a number")
    return Unauthorized(f"{what} is malformed (not a signed JWT)")


def check_times(claims: Mapping[str, Any], now: float, what: str = "token") -> float:
    """``exp`` (returned) and ``iat`` checked against ``now``: Unauthorized when expired."""
    exp, iat = claims.get("exp"), claims.get("iat")
    for name, value in (("exp", exp), ("iat", iat)):
        if value is None and name == "iat":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthorized(f"{what} is malformed: claim {name!r} must be a number")
    assert isinstance(exp, int | float)
    if now >= exp:
        raise Unauthorized(f"{what} expired")
    if isinstance(iat, int | float) and iat > now + LEEWAY_S:
        raise Unauthorized(f"{what} is not valid yet (issued in the future)")
    return float(exp)


class TokenIssuer:
    """Create and verify the server's own bearer tokens.

    Parameters
    ----------
    key
        The server key (:func:`load_server_key`); tokens are signed with a key derived from it.
    clock
        Seconds since the epoch (``time.time``); tests pass a fake one.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < KEY_BYTES:
            raise ConfigError(f"the server key must have at least {KEY_BYTES} bytes")
        self._key = derive_key(key, "token")
        self._clock = clock

    @classmethod
    def from_key_file(
        cls, path: str | Path, *, create: bool = True, clock: Callable[[], float] = time.time
    ) -> TokenIssuer:
        """An issuer with the key of ``path`` (see :func:`load_server_key`)."""
        return cls(load_server_key(path, create=create), clock=clock)

    def create(
        self,
        subject: str,
        *,
        purpose: str,
        sites: Iterable[str] | None = None,
        collections: Iterable[str] | None = None,
        ttl_s: float = 3600.0,
        token_id: str | None = None,
    ) -> str:
        """A signed token for ``subject``.

        Parameters
        ----------
        subject
            Who it is for (a user or service name; never a patient identifier).
        purpose
            The consent purpose (one of :data:`atlas.privacy.consent.SCOPES`).
        sites, collections
            What it covers; ``None``: every site (collection).
        ttl_s
            Lifetime in seconds (at most :data:`MAX_TTL_S`).
        token_id
            The ``jti``; default a random UUID.

        Raises
        ------
        InvalidInput
            An unknown purpose, a bad name, subject or lifetime.
        """
        now = float(self._clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": _check_subject(subject),
            "jti": _check_token_id(uuid.uuid4().hex if token_id is None else token_id),
            "iat": int(now),
            "exp": math.ceil(now + check_ttl(ttl_s)),
            "purpose": check_purpose(purpose),
        }
        s, c = check_names("site", sites), check_names("collection", collections)
        claims["sites"] = None if s is None else sorted(s)
        claims["collections"] = None if c is None else sorted(c)
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token`` (as :meth:`verify` checks them)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token is malformed (empty or too long)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=ISSUER,
                options={"require": list(_REQUIRED), "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise decode_failure(exc) from None
        check_times(claims, float(self._clock()))
        return claims

    def verify(self, token: str) -> Grant:
        """The grant of a token this server signed.

        Raises
        ------
        Unauthorized
            Bad signature, expired, not a JWT, wrong issuer or algorithm, a missing or
            malformed claim, an unknown purpose. The message names the reason only.
        """
        claims = self.claims(token)
        for name in ("sub", "jti", "purpose"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise Unauthorized(f"token is malformed: claim {name!r} must be a string")
        try:
            purpose = check_purpose(claims["purpose"])
        except InvalidInput:
            raise Unauthorized("token is malformed: its purpose is not a consent scope") from None
        return Grant(
            subject=claims["sub"],
            token_id=claims["jti"],
            purpose=purpose,
            sites=_names_claim(claims, "sites"),
            collections=_names_claim(claims, "collections"),
            expires=float(claims["exp"]),
        )
