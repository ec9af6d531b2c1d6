"""The FastAPI application of ``atlas serve``: routers, error mapping, CORS and the audit trail.

:func:`create_app` builds one app from a :class:`~atlas.serve.config.ServeConfig` (or an
opened :class:`~atlas.serve.context.ServeContext`). Its layers, outermost first:

1. CORS (``config.cors_origins``), so preflights and error responses carry the headers;
2. the audit middleware: one record per request (event and outcome from the status, subject
   and token id from the grant, the client address, the purpose, and what the route said it
   served on ``request.state``); 401 and 403 are ``SECURITY_ALERT``s;
3. the error mapping (:mod:`atlas.serve.errors_http`): every error is one line of JSON
   ``{"error", "detail"}``; bad input is a 4xx, never a 500;
4. the routers: catalog, tiles, signed URLs, raw Zarr, the viewer, ``/healthz``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atlas import __version__
from atlas.serve.access import Authenticator, audit_record
from atlas.serve.audit import AuditTrail
from atlas.serve.auth import Authenticator as ServerAuthenticator
from atlas.serve.catalog_api import catalog_router
from atlas.serve.config import ServeConfig
from atlas.serve.context import ServeContext
from atlas.serve.errors_http import error_body, install_error_handlers
from atlas.serve.limits import RenderSlots
from atlas.serve.render import RenderedTile
from atlas.serve.signed import SignedUrls
from atlas.serve.signed_api import signed_router
from atlas.serve.tile_cache import TileCache
from atlas.serve.tiles_api import Renderer, tiles_router
from atlas.serve.viewer import viewer_router
from atlas.serve.zarr_http import zarr_router

__all__ = ["UNAUDITED", "create_app"]

log = logging.getLogger("atlas.serve")

#: paths that read no data and leave no audit record (health probes, the API description,
#: the viewer's static files)
UNAUDITED = ("/healthz", "/openapi.json", "/docs", "/redoc", "/viewer")


class AuditMiddleware:
    """Append one audit record per request, after its response (ASGI middleware).

    Counts the body bytes sent; a failure inside the app is answered with the one-line 500
    and audited as a serious failure. A failure of the audit trail itself is logged and never
    changes the response already sent.
    """

    def __init__(self, app: ASGIApp, sink: AuditTrail) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if any(path == p or path.startswith(p + "/") for p in UNAUDITED):
            await self.app(scope, receive, send)
            return
        seen = {"status": 500, "bytes": 0, "started": False}

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
                seen["started"] = True
            elif message["type"] == "http.response.body":
                seen["bytes"] = int(seen["bytes"]) + len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        except Exception:
            log.exception("internal error on %s %s", scope["method"], path)
            if not seen["started"]:
                from fastapi.responses import JSONResponse

                seen["status"] = 500
                response = JSONResponse(error_body("internal", "internal error"), 500)
                await response(scope, receive, send)
        finally:
            request = Request(scope)
            fields = audit_record(request, int(seen["status"]), int(seen["bytes"]))
            try:
                await anyio.to_thread.run_sync(lambda: self.sink.append(**fields.as_kwargs()))
            except Exception:
                log.exception("the audit trail could not record %s", fields.route)


def _default_audit(ctx: ServeContext, auth: Authenticator) -> AuditTrail:
    from atlas.serve.tokens import load_server_key

    key = getattr(auth, "key", None)
    if not isinstance(key, bytes):
        key = load_server_key(ctx.config.key_file, create=True)
    return AuditTrail(ctx.config.audit_log, key)


def _signed_urls(ctx: ServeContext, auth: Authenticator) -> SignedUrls:
    found = getattr(auth, "signed_urls", None)
    if isinstance(found, SignedUrls):
        return found
    from atlas.serve.tokens import load_server_key

    key = load_server_key(ctx.config.key_file, create=True)
    return SignedUrls(key, default_ttl_s=ctx.config.signed_url_ttl_s)


def create_app(
    config: ServeConfig | ServeContext,
    *,
    authenticator: Authenticator | None = None,
    audit: AuditTrail | None = None,
    renderer: Renderer | None = None,
    tile_cache: TileCache[RenderedTile] | None = None,
    close_context: bool | None = None,
) -> FastAPI:
    """The Atlas HTTP API as a FastAPI app (OpenAPI at ``/openapi.json``, docs at ``/docs``).

    Parameters
    ----------
    config
        The server's settings, or a context already opened on them (shared with the caller).
    authenticator
        Turns the ``Authorization`` header (or a signed URL's token) into a grant (default:
        :class:`atlas.serve.auth.Authenticator` from the config: server key, revocation list,
        OpenID Connect issuer).
    audit
        The audit trail (default: :class:`atlas.serve.audit.AuditTrail` on
        ``config.audit_log``, keyed by the server key).
    renderer
        ``render(reader, entry, spec) -> RenderedTile`` (default:
        :func:`atlas.serve.render.render_tile`).
    tile_cache
        The cache of rendered tiles (default: a :class:`atlas.serve.tile_cache.TileCache` of
        ``config.tile_cache_bytes``).
    close_context
        Close the context when the app shuts down (default: when this function opened it).

    Returns
    -------
    FastAPI
        The app; serve it with uvicorn (:mod:`atlas.serve.server`).
    """
    ctx = config if isinstance(config, ServeContext) else ServeContext(config)
    owns = not isinstance(config, ServeContext) if close_context is None else close_context
    auth = authenticator if authenticator is not None else ServerAuthenticator(ctx.config)
    sink = audit if audit is not None else _default_audit(ctx, auth)
    slots = RenderSlots(
        ctx.config.render_concurrency, ctx.config.queue_depth, ctx.config.queue_wait_s
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns:
            ctx.close()

    app = FastAPI(
        title="Atlas",
        version=__version__,
        summary="Federated cancer-imaging atlas: catalog, MPR tiles, raw OME-Zarr, viewer.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.authenticator = auth
    app.state.audit = sink
    app.state.slots = slots
    app.state.started = time.time()
    install_error_handlers(app)

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict[str, Any]:
        """Liveness: the server answers (reads no data, needs no token)."""
        return {"status": "ok", "version": __version__, "sites": len(ctx.stores)}

    app.include_router(catalog_router(ctx))
    app.include_router(tiles_router(ctx, slots, renderer=renderer, cache=tile_cache))
    app.include_router(signed_router(ctx, _signed_urls(ctx, auth)))
    app.include_router(zarr_router(ctx, auth))
    app.include_router(viewer_router())

    app.add_middleware(AuditMiddleware, sink=sink)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(ctx.config.cors_origins),
        allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Range", "If-None-Match", "Content-Type"],
        expose_headers=["ETag", "Content-Range", "Content-Length", "Accept-Ranges", "Retry-After"],
        max_age=600,
    )
    return app
