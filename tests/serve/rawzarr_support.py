"""Shared by the raw-Zarr tests: a stand-in authenticator, the router on a real uvicorn server
in a thread, a client that sends paths exactly as written, and a multipart/byteranges parser.

The stand-in authenticator reads ``Authorization: Bearer test:<subject>:<site>,<site>``;
signed tokens are looked up in a table: the routes only see the :class:`Grant` it returns, as
with the real one.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import uvicorn
import zarr
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from atlas.errors import (
    AtlasError,
    Forbidden,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    Unauthorized,
)
from atlas.serve import Grant, ServeConfig, ServeContext
from atlas.serve.zarr_http import zarr_router
from atlas.storage import Store

STATUS = ((Unauthorized, 401), (Forbidden, 403), (NotFound, 404), (InvalidInput, 400),
          (StoreUnavailable, 503))  # fmt: skip
ORIGIN = "https://viewer.example.org"


def authenticate(request: Request) -> Grant:
    """``Authorization: Bearer test:<subject>:<site>,<site>``."""
    header = request.headers.get("authorization") or ""
    if not header.startswith("Bearer test:"):
        raise Unauthorized("a bearer token is required")
    subject, sites = header.removeprefix("Bearer test:").split(":")
    return Grant(subject, f"jti-{subject}", "research", sites=frozenset(sites.split(",")))


async def atlas_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's error mapping, in short: each Atlas error class to its status."""
    status = next((s for cls, s in STATUS if isinstance(exc, cls)), 500)
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status)


def make_app(ctx: ServeContext, signed: dict[str, Grant]) -> FastAPI:
    def verify(token: str) -> Grant:
        if token not in signed:
            raise Unauthorized("the signed URL is invalid or expired")
        return signed[token]

    app = FastAPI()
    app.add_exception_handler(AtlasError, atlas_error)
    app.include_router(zarr_router(ctx, authenticate, verify))
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(ctx.config.cors_origins),
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["Authorization", "Range", "If-None-Match"],
        expose_headers=["ETag", "Content-Range", "Content-Length", "Accept-Ranges"],
    )
    return app


class Live:
    def __init__(self, base: str, ctx: ServeContext, image: dict[str, str]) -> None:
        self.base, self.ctx, self.image = base, ctx, image
        self.http = httpx.Client(base_url=base, timeout=30)

    def get(self, path: str, sites: str | None = "a", **headers: str) -> httpx.Response:
        if sites is not None:
            headers["Authorization"] = f"Bearer test:alice:{sites}"
        return self.http.get(path, headers=headers)

    def raw(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """A request sent exactly as written (no client-side path normalisation)."""
        host, port = self.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request(method, path, headers={"Authorization": "Bearer test:alice:a"})
        resp = conn.getresponse()
        out = resp.status, dict(resp.getheaders()), resp.read()
        conn.close()
        return out


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def serve_catalog(stores: dict[str, Store], image: dict[str, str], tmp: Path) -> Iterator[Live]:
    cfg = ServeConfig(
        stores=stores, key_file=tmp / "k", audit_log=tmp / "a", revocations=tmp / "r",
        cors_origins=(ORIGIN,),
    )  # fmt: skip
    ctx = ServeContext(cfg)
    signed = {"tok-a": Grant("link", "jti-link", "research", path_prefix=("a", image["a"]))}
    try:
        with running(make_app(ctx, signed)) as base:
            yield Live(base, ctx, image)
    finally:
        ctx.close()


def local_array(live: Live, site: str = "a") -> np.ndarray:
    store = live.ctx.stores[site].zarr_store()
    return zarr.open_array(store, path=f"{live.image[site]}/0", mode="r")[:]


def parse_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/byteranges body (RFC 2046 framing) into (headers, payload) parts."""
    delim = f"--{boundary}".encode()
    assert body.startswith(delim + b"\r\n") and body.endswith(b"\r\n" + delim + b"--\r\n")
    inner = body[len(delim) + 2 : -(len(delim) + 6)]
    parts = []
    for chunk in inner.split(b"\r\n" + delim + b"\r\n"):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((fields, payload))
    return parts
