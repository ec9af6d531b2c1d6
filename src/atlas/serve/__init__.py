"""Serving viewers: the ``atlas serve`` HTTP server (FastAPI on uvicorn).

Catalog API, server-side MPR tiles, raw OME-Zarr over HTTP, the web viewer, scoped tokens and
a hash-chained audit trail, all reading through :mod:`atlas.read`.

Imported lazily: ``import atlas.serve`` loads neither FastAPI nor numpy.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "AuditAction": "atlas.serve.audit",
    "AuditCheck": "atlas.serve.audit",
    "AuditEvent": "atlas.serve.audit",
    "AuditOutcome": "atlas.serve.audit",
    "AuditTrail": "atlas.serve.audit",
    "Authenticator": "atlas.serve.auth",
    "Grant": "atlas.serve.grants",
    "OidcVerifier": "atlas.serve.oidc",
    "Revocations": "atlas.serve.revocation",
    "SignedUrl": "atlas.serve.signed",
    "SignedUrls": "atlas.serve.signed",
    "TokenIssuer": "atlas.serve.tokens",
    "OidcConfig": "atlas.serve.config",
    "SeriesEntry": "atlas.serve.context",
    "ServeConfig": "atlas.serve.config",
    "ServeContext": "atlas.serve.context",
    "load_serve_config": "atlas.serve.config",
    "create_app": "atlas.serve.app",
    "RenderSlots": "atlas.serve.limits",
    "ServerSpec": "atlas.serve.server",
    "serve_in_thread": "atlas.serve.server",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.serve", _EXPORTS, globals())
