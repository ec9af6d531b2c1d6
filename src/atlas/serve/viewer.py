"""The web viewer's static files at ``/viewer``: :func:`viewer_router`.

The viewer is plain HTML, CSS and ES modules (no build step) shipped as package data in
``atlas/serve/viewer/``. The page itself holds no data and needs no token: it asks the user
for one and sends it as a bearer header with every ``fetch()`` of the API (tiles included,
turned into blob URLs), so the files are served to anyone, under a strict
Content-Security-Policy: scripts, styles and connections only from this origin, images only
from this origin and ``blob:``, no inline script or style, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

__all__ = ["CSP", "VIEWER_FILES", "viewer_router"]

#: the Content-Security-Policy of every viewer file
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: the files of the viewer and their media types
VIEWER_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "mpr.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # the files change with the installed version: revalidate (cheap, by ETag)
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str


def _load() -> dict[str, _File]:
    folder = resources.files("atlas.serve") / "viewer"
    files = {}
    for name, media_type in VIEWER_FILES.items():
        body = (folder / name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[name] = _File(body, media_type, etag)
    return files


def viewer_router(prefix: str = "/viewer") -> APIRouter:
    """The routes of the viewer: ``GET|HEAD {prefix}/`` and its files.

    ``{prefix}`` redirects to ``{prefix}/`` (the page's relative URLs need the slash);
    unknown names are 404 with the API's one-line JSON error. The files are read once, when
    the router is made.

    Parameters
    ----------
    prefix
        Where the viewer lives (default ``/viewer``; the API is expected one level up).

    Returns
    -------
    APIRouter
        Routes that need no token (the page holds no data).
    """
    files = _load()
    router = APIRouter(include_in_schema=False)

    def serve(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None:
            return JSONResponse(
                {"error": "not_found", "detail": f"the viewer has no file {name!r}"},
                status_code=404,
                headers=_HEADERS,
            )
        headers = {**_HEADERS, "ETag": found.etag}
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else found.body
        headers["Content-Length"] = str(len(found.body))
        return Response(body, media_type=found.media_type, headers=headers)

    @router.api_route(prefix, methods=["GET", "HEAD"])
    def viewer_root() -> Response:
        return RedirectResponse(prefix + "/", status_code=307, headers=_HEADERS)

    @router.api_route(prefix + "/", methods=["GET", "HEAD"])
    def viewer_index(request: Request) -> Response:
        return serve("index.html", request)

    @router.api_route(prefix + "/{name}", methods=["GET", "HEAD"])
    def viewer_file(name: str, request: Request) -> Response:
        return serve(name, request)

    return router
