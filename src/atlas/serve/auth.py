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

:func:`redact` and :func:`redact_path` shorten tokens for logs; :class:`RedactTokens` is a
logging filter doing it to every record (uvicorn's access log prints request paths, and a
signed URL's path holds its token). They live in :mod:`atlas.serve.redact`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from atlas.errors import Unauthorized
from atlas.serve.config import ServeConfig
from atlas.serve.grants import Grant
from atlas.serve.oidc import ACCEPTED_ALGORITHMS, OidcVerifier
from atlas.serve.redact import RedactTokens, redact, redact_path, redact_text
from atlas.serve.revocation import Revocations
from atlas.serve.signed import SignedUrls
from atlas.serve.tokens import MAX_TOKEN_CHARS, TokenIssuer, load_server_key

__all__ = [
    "Authenticator",
    "RedactTokens",
    "bearer_token",
    "redact",
    "redact_path",
    "redact_text",
]


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
        if signed_token is not None:
            grant = self.signed_urls.verify(signed_token)
        else:
            token = bearer_token(authorization_header)
            grant = self._bearer(token)
        return self.revocations.check(grant)

    def _bearer(self, token: str) -> Grant:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token is malformed (too long)")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized("token is malformed (not a signed JWT)") from None
        if alg in ACCEPTED_ALGORITHMS:
            if self.oidc is None:
                raise Unauthorized(
                    "tokens of an external issuer are not accepted (no [serve.oidc] configured)"
                )
            return self.oidc.verify(token)
        return self.tokens.verify(token)
