"""Signed URLs: :class:`SignedUrls`, short-lived tokens in a path, for tools without headers.

Neuroglancer, vizarr and other viewers fetch Zarr keys by URL and cannot add an
``Authorization`` header. A caller with a grant asks for a signed URL of one image
(``POST /api/signed-urls``) and gets ``/signed/<token>/<site>/<image path>/``; every key under
that prefix can then be fetched by plain URL until the token expires (default
``signed_url_ttl_s``, never after the grant that asked for it).

The token is a JWT signed with a key derived from the server key for this use only, so it is
not a bearer token and a bearer token is not one. It carries the asking grant's subject,
purpose and token id (revoking that token revokes its signed URLs) and the one
``(site, image path)`` it covers; :meth:`SignedUrls.verify` gives back a
:class:`~atlas.serve.grants.Grant` with ``path_prefix`` set. Its characters are letters,
digits, ``-``, ``_`` and ``.``: safe in a URL path as they are.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jwt

from atlas.errors import Forbidden, InvalidInput, Unauthorized
from atlas.privacy.consent import check_purpose
from atlas.serve.grants import Grant
from atlas.serve.tokens import (
    ISSUER,
    KEY_BYTES,
    MAX_TOKEN_CHARS,
    check_names,
    check_times,
    check_ttl,
    decode_failure,
    derive_key,
)

__all__ = ["MAX_SIGNED_TTL_S", "SignedUrl", "SignedUrls"]

#: the longest a signed URL may live (one hour): it is a capability anyone holding it can use
MAX_SIGNED_TTL_S = 3600.0
_AUDIENCE = "atlas-signed-url"
_ALGORITHM = "HS256"
_SEGMENT = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,255}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def check_image_path(image_path: str) -> str:
    """An image path inside a store: relative, ``/``-separated segments, no ``.`` or ``..``."""
    path = image_path.strip("/") if isinstance(image_path, str) else ""
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise InvalidInput(
            "an image path is relative, '/'-separated, without empty, '.' or '..' segments, "
            "backslashes or control characters"
        )
    return path


@dataclass(frozen=True)
class SignedUrl:
    """A signed URL as the API returns it.

    Attributes
    ----------
    url
        The path ``/signed/<token>/<site>/<image path>/`` (relative to the server).
    token
        The token alone (never log it whole: :func:`atlas.serve.auth.redact`).
    expires
        Expiry, seconds since the epoch (UTC).
    token_id
        The signed URL's own id (its ``jti``; the grant it came from is ``parent``).
    """

    url: str
    token: str
    expires: float
    token_id: str


class SignedUrls:
    """Issue and verify path tokens limited to one image.

    Parameters
    ----------
    key
        The server key; the tokens are signed with a key derived from it for this use.
    default_ttl_s
        Lifetime when the caller names none (``signed_url_ttl_s``).
    max_ttl_s
        The longest lifetime a caller may ask for (at least ``default_ttl_s``).
    clock
        Seconds since the epoch (``time.time``); tests pass a fake one.
    """

    def __init__(
        self,
        key: bytes,
        *,
        default_ttl_s: float = 600.0,
        max_ttl_s: float = MAX_SIGNED_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) < KEY_BYTES:
            raise InvalidInput(f"the server key must have at least {KEY_BYTES} bytes")
        self._key = derive_key(key, "signed-url")
        self.default_ttl_s = check_ttl(default_ttl_s)
        self.max_ttl_s = max(check_ttl(max_ttl_s), self.default_ttl_s)
        self._clock = clock

    def issue(
        self, grant: Grant, site: str, image_path: str, *, ttl_s: float | None = None
    ) -> SignedUrl:
        """A signed URL of one image for ``grant`` (which the caller checked covers the image).

        Parameters
        ----------
        grant
            The grant asking; the URL carries its subject, purpose and token id, and never
            outlives it.
        site, image_path
            The image (as :meth:`atlas.serve.context.ServeContext.series` found it).
        ttl_s
            Lifetime in seconds (default ``default_ttl_s``, at most ``max_ttl_s``).

        Raises
        ------
        Forbidden
            The grant does not cover the site, or is itself a signed URL of another image.
        InvalidInput
            A bad site name, image path or lifetime.
        """
        site_name = str(site)
        check_names("site", [site_name])
        path = check_image_path(image_path)
        ttl = check_ttl(self.default_ttl_s if ttl_s is None else ttl_s, limit=self.max_ttl_s)
        if not grant.allows_site(site_name):
            raise Forbidden(f"token {grant.token_id!r} does not cover site {site_name!r}")
        if grant.path_prefix is not None and not (
            grant.path_prefix[0] == site_name
            and (path + "/").startswith(grant.path_prefix[1].rstrip("/") + "/")
        ):
            raise Forbidden("a signed URL can only be signed again for its own image")
        now = float(self._clock())
        expires = min(now + ttl, grant.expires)
        if expires <= now:
            raise Forbidden(f"token {grant.token_id!r} has expired")
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": _AUDIENCE,
            "sub": grant.subject,
            "jti": jti,
            "parent": grant.token_id,
            "purpose": grant.purpose,
            "site": site_name,
            "path": path,
            "iat": int(now),
            "exp": round(expires, 3),
        }
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        url = f"/signed/{token}/{quote(site_name, safe='')}/{quote(path, safe='/')}/"
        return SignedUrl(url=url, token=token, expires=expires, token_id=jti)

    def verify(self, token: str) -> Grant:
        """The grant of a signed URL: its asker's subject, purpose and token id, one image.

        Raises
        ------
        Unauthorized
            The token does not verify (signature, expired, malformed); the message names the
            reason only.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN.match(token):
            raise Unauthorized("signed URL token is malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                audience=_AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "sub", "jti", "parent", "purpose", "site", "path"],
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise decode_failure(exc, "signed URL") from None
        expires = check_times(claims, float(self._clock()), "signed URL")
        try:
            fields = [claims[k] for k in ("sub", "parent", "purpose", "site", "path")]
            if not all(isinstance(v, str) and v for v in fields):
                raise InvalidInput("claims must be strings")
            subject, parent, purpose, site, path = fields
            check_purpose(purpose)
            check_names("site", [site])
            check_image_path(path)
        except InvalidInput:
            raise Unauthorized("signed URL token is malformed") from None
        return Grant(
            subject=subject,
            token_id=parent,
            purpose=purpose,
            sites=frozenset({site}),
            collections=None,
            expires=expires,
            path_prefix=(site, path),
        )
