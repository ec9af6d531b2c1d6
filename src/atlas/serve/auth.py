"""Who is asking: :class:`Authenticator` turns a request's credentials into a Grant.

One call per request, :meth:`Authenticator.authenticate`, with the ``Authorization`` header
and, on the ``/signed/...`` routes, the token from the path:

- a signed-URL token: verified by :class:`~atlas.serve.signed.SignedUrls`;
- ``Bearer <jwt>`` signed with HS256: the server's own token
  (:class:`~atlas.serve.tokens.TokenIssuer`);
- ``Bearer <jwt>`` signed with RS256/ES256: a token of the external OpenID Connect issuer
  (:class:`~atlas.serve.oidc.OidcVerifier`), when ``[serve.oidc]`` is configured;

then the token id is checked against the revocation list
(:class:`~atlas.serve.revocation.Revocations`). Every failure is
:class:`~atlas.errors.Unauthorized` (401) with a reason and without the token.

A viewer sends the same token with hundreds of tile requests: verified grants are kept in a
small in-memory cache keyed by the token, so a repeated token costs a dictionary lookup, an
expiry check against the clock and the revocation check (which is never cached beyond
``revocation_poll_s``) instead of a signature verification.

:func:`redact` and :func:`redact_path` shorten tokens for logs; :class:`RedactTokens` is a
logging filter doing it to every record (uvicorn's access log prints request paths, and a
signed URL's path holds its token). They live in :mod:`atlas.serve.redact`.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from atlas.errors import Unauthorized
from atlas.serve.config import ServeConfig
from atlas.serve.grants import Grant
from atlas.serve.oidc import ACCEPTED_ALGORITHMS, OidcVerifier
from atlas.serve.redact import RedactTokens, redact, redact_path, redact_text
from atlas.serve.revocation import Revocations
from atlas.serve.signed import SignedUrls
from atlas.serve.tokens import MAX_TOKEN_CHARS, TokenIssuer, load_server_key

#: verified grants kept, by token (a few hundred bytes each)
GRANT_CACHE_ENTRIES = 4096

__all__ = [
    "GRANT_CACHE_ENTRIES",
    "Authenticator",
    "RedactTokens",
    "bearer_token",
    "redact",
    "redact_path",
    "redact_text",
]


def _algorithm(token: str) -> object:
    """The ``alg`` of a JWT's header, unverified (to choose who verifies it)."""
    head = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        raise Unauthorized("token is malformed (not a signed JWT)") from None
    if not isinstance(header, dict) or token.count(".") != 2:
        raise Unauthorized("token is malformed (not a signed JWT)")
    return header.get("alg")


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises
    ------
    Unauthorized
        No header (``missing bearer token``), another scheme, or no token after ``Bearer``.
    """
    if authorization_header is None or not authorization_header.strip():
        raise Unauthorized("missing bearer token")
    scheme, _, token = authorization_header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise Unauthorized("missing bearer token")
    return token


class Authenticator:
    """The server's token, OIDC, signed-URL and revocation checks, from its config.

    Parameters
    ----------
    config
        ``key_file`` (created when absent), ``revocations``, ``revocation_poll_s``, ``oidc``,
        ``signed_url_ttl_s``.
    clock
        Seconds since the epoch, for expiry (``time.time``).
    monotonic
        A monotonic clock, for the revocation poll (``time.monotonic``).

    Attributes
    ----------
    key
        The server key (also the audit trail's: ``AuditTrail(config.audit_log, auth.key)``).
    tokens, signed_urls, revocations, oidc
        The parts, for the routes that issue signed URLs and the CLI.

    Raises
    ------
    ConfigError
        The key file cannot be used (see :func:`~atlas.serve.tokens.load_server_key`) or the
        OIDC key set cannot be read.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = load_server_key(config.key_file, create=True)
        self.tokens = TokenIssuer(self.key, clock=clock)
        self.signed_urls = SignedUrls(self.key, default_ttl_s=config.signed_url_ttl_s, clock=clock)
        self.revocations = Revocations(
            config.revocations, config.revocation_poll_s, clock=monotonic
        )
        self._clock = clock
        self._cache: OrderedDict[tuple[bool, str], Grant] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.oidc = (
            None
            if config.oidc is None
            else OidcVerifier(config.oidc, clock=clock, monotonic=monotonic)
        )

    def authenticate(
        self, authorization_header: str | None, signed_token: str | None = None
    ) -> Grant:
        """The grant of a request.

        Parameters
        ----------
        authorization_header
            The ``Authorization`` header's value, or ``None``.
        signed_token
            The token of a ``/signed/<token>/...`` path; when given, it is the credential
            (the header is not needed).

        Raises
        ------
        Unauthorized
            Missing, malformed, badly signed, expired or revoked credentials; an external
            token when no issuer is configured.
        """
        signed = signed_token is not None
        token = signed_token if signed_token is not None else bearer_token(authorization_header)
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token is malformed (too long)")
        grant = self._cached((signed, token))
        if grant is None:
            grant = self.signed_urls.verify(token) if signed else self._bearer(token)
            with self._cache_lock:
                self._cache[(signed, token)] = grant
                while len(self._cache) > GRANT_CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return self.revocations.check(grant)

    def _cached(self, key: tuple[bool, str]) -> Grant | None:
        with self._cache_lock:
            grant = self._cache.get(key)
            if grant is None:
                return None
            if self._clock() >= grant.expires:
                del self._cache[key]
                return None  # verified again: "expired" with its reason
            self._cache.move_to_end(key)
            return grant

    def _bearer(self, token: str) -> Grant:
        if _algorithm(token) in ACCEPTED_ALGORITHMS:
            if self.oidc is None:
                raise Unauthorized(
                    "tokens of an external issuer are not accepted (no [serve.oidc] configured)"
                )
            return self.oidc.verify(token)
        return self.tokens.verify(token)
