"""Raw OME-Zarr over HTTP: the stored objects, read-only, for zarr-python, tensorstore & co.

zarr-python, tensorstore, ome-zarr-py, vizarr and neuroglancer open a series from the server.

Two route forms, ``GET`` and ``HEAD`` only:

- ``/zarr/{site}/{key}``: the caller's ``Authorization: Bearer ...`` grant;
- ``/signed/{token}/{site}/{key}``: a signed URL's token in the path (decision 0061), for
  tools that cannot send a header; the token names one image's path prefix.

A key is served only if it lies inside an image the catalog lists and the grant covers
(:meth:`ServeContext.image_for_key`): the index, audit, staging and consent objects never are.
Keys with ``..``, ``.``, empty parts, backslashes, control characters or ``%`` left after
decoding are refused with ``400`` before anything is looked up. Answers carry a strong ``ETag``
(from the stored object's version: S3 ETag, local inode/size/mtime), ``Cache-Control``,
``Accept-Ranges: bytes``; ``If-None-Match`` gives ``304``; ``Range`` gives ``206`` (one part,
or ``multipart/byteranges``) or ``416`` (decision 0060). Only the requested bytes are read
from the store, in blocks of :data:`BLOCK` bytes, so a range of a large shard never loads it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from atlas.errors import InvalidInput, NotFound, StoreUnavailable, Unauthorized
from atlas.serve.context import ServeContext
from atlas.serve.grants import Grant
from atlas.serve.ranges import (
    ByteRange,
    Multipart,
    RangeOutcome,
    plan_ranges,
    unsatisfied_content_range,
)
from atlas.storage import ObjectStat, Store

__all__ = ["BLOCK", "CACHE_CONTROL", "check_key", "zarr_router"]

#: bytes read from the store at a time (a request's memory is bounded by it)
BLOCK = 4 << 20
#: objects of a published image never change; a private cache may keep them an hour
CACHE_CONTROL = "private, max-age=3600"
ALLOW = "GET, HEAD, OPTIONS"
MAX_KEY = 1024
MAX_TOKEN = 4096
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\%:]")

#: ``authenticate(request) -> Grant`` (bearer routes) and ``verify(token) -> Grant``
BearerAuth = Callable[[Request], Grant]
SignedAuth = Callable[[str], Grant]


def check_key(key: str) -> str:
    """``key`` as a clean relative store key, or :class:`InvalidInput` (path traversal & co).

    A single trailing ``/`` is dropped; leading ``/`` (absolute), empty, ``.`` and ``..`` parts,
    backslashes, control characters, ``:`` and ``%`` (still encoded after decoding) are refused.
    """
    if not key or len(key) > MAX_KEY:
        raise InvalidInput(f"a raw key must have 1 to {MAX_KEY} characters")
    if _BAD_CHARS.search(key):
        raise InvalidInput("a raw key may not contain backslashes, control characters, ':' or '%'")
    if key.startswith("/"):
        raise InvalidInput("a raw key is relative to its site; absolute paths are refused")
    body = key[:-1] if key.endswith("/") else key
    if any(part in ("", ".", "..") for part in body.split("/")):
        raise InvalidInput("a raw key may not have empty, '.' or '..' parts")
    return body


def _media_type(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    json_names = ("zarr.json", ".zattrs", ".zgroup", ".zarray")
    return "application/json" if name in json_names else "application/octet-stream"


def _etag(stat: ObjectStat) -> str:
    digest = hashlib.blake2b(f"{stat.version}/{stat.size}".encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def _matches(header: str, etag: str) -> bool:
    """Weak comparison of ``If-None-Match`` against ``etag`` (RFC 9110 §13.1.2)."""
    tags = [t.strip() for t in header.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


def _blocks(store: Store, key: str, r: ByteRange) -> Iterator[bytes]:
    """Bytes of ``r`` in blocks of at most :data:`BLOCK` (an object that shrank: an error)."""
    pos = r.start
    while pos < r.stop:
        end = min(r.stop, pos + BLOCK)
        data = store.read_range(key, pos, end)
        if len(data) != end - pos:
            raise StoreUnavailable(f"object {key!r} changed while it was read; try again")
        yield data
        pos = end


def _lead(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Read the first block now (so a vanished object is a 404, not a cut response)."""
    first = next(blocks, None)

    def rest() -> Iterator[bytes]:
        if first is not None:
            yield first
        yield from blocks

    return rest()


def _authenticators(
    authenticate: Any, verify_signed: SignedAuth | None
) -> tuple[BearerAuth, SignedAuth]:
    if hasattr(authenticate, "authenticate"):  # an Authenticator (serve.auth)
        auth = authenticate

        def bearer(request: Request) -> Grant:
            return auth.authenticate(request.headers.get("authorization"), None)

        def signed(token: str) -> Grant:
            return auth.authenticate(None, token)

        return bearer, verify_signed or signed

    def no_signed(token: str) -> Grant:
        raise Unauthorized("signed URLs are not enabled on this server")

    return authenticate, verify_signed or no_signed


def zarr_router(
    ctx: ServeContext, authenticate: Any, verify_signed: SignedAuth | None = None
) -> APIRouter:
    """The raw Zarr routes over ``ctx``'s stores.

    Parameters
    ----------
    ctx
        The server's context (stores, catalog lookups checked against the grant).
    authenticate
        Either ``authenticate(request) -> Grant`` for the bearer routes, or an object with
        ``authenticate(authorization, signed_token) -> Grant`` (:class:`atlas.serve.auth.
        Authenticator`), which then verifies signed tokens too. Raises
        :class:`~atlas.errors.Unauthorized`; the routes know nothing of tokens.
    verify_signed
        ``verify_signed(token) -> Grant`` for ``/signed/...`` (default: the authenticator's,
        or none: signed paths answer 401).

    Returns
    -------
    APIRouter
        ``GET``/``HEAD`` on ``/zarr/{site}/{key:path}`` and ``/signed/{token}/{site}/{key:path}``;
        other methods answer 405 with ``Allow``.
    """
    bearer, signed = _authenticators(authenticate, verify_signed)
    router = APIRouter(tags=["raw zarr"])

    def serve(request: Request, grant: Grant, site: str, key: str, vary: bool) -> Response:
        request.state.grant = grant
        key = check_key(key)
        entry, _ = ctx.image_for_key(grant, site, key)
        request.state.audit_event = "INSTANCES_ACCESSED"
        request.state.audit_object = entry.series_id
        request.state.audit_site = site
        store = ctx.stores[site]
        try:
            stat = store.stat(key)
        except NotFound:
            raise NotFound(f"no object {key!r} at site {site!r}") from None
        except StoreUnavailable:
            raise StoreUnavailable(f"site {site!r} did not answer; try again") from None
        etag = _etag(stat)
        media = _media_type(key)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
        if vary:
            headers["Vary"] = "Authorization"
        else:  # a signed path is a credential: never pass it on in a Referer
            headers["Referrer-Policy"] = "no-referrer"
        inm = request.headers.get("if-none-match")
        if inm is not None and _matches(inm, etag):
            return Response(status_code=304, headers=headers)
        size = stat.size
        header = request.headers.get("range") if request.method == "GET" else None
        if_range = request.headers.get("if-range")
        if header is not None and if_range is not None and if_range.strip() != etag:
            header = None  # the client's copy is another version: send it all (§13.1.5)
        plan = plan_ranges(header, size)
        if plan.outcome is RangeOutcome.UNSATISFIABLE:
            headers["Content-Range"] = unsatisfied_content_range(size)
            detail = f"no requested range lies inside the object's {size} bytes"
            body = {"error": "range_not_satisfiable", "detail": detail}
            return JSONResponse(body, status_code=416, headers=headers)

        def read(r: ByteRange) -> Iterator[bytes]:
            try:
                yield from _blocks(store, key, r)
            except NotFound:
                raise NotFound(f"no object {key!r} at site {site!r}") from None

        status, length = 200, size
        chunks: Callable[[], Iterator[bytes]] = lambda: read(ByteRange(0, size))  # noqa: E731
        if plan.outcome is RangeOutcome.PARTIAL and len(plan.ranges) == 1:
            (r,) = plan.ranges
            status, length = 206, r.length
            headers["Content-Range"] = r.content_range(size)
            chunks = lambda: read(r)  # noqa: E731
        elif plan.outcome is RangeOutcome.PARTIAL:
            parts = Multipart(plan.ranges, size, media)
            status, length, media = 206, parts.length, parts.media_type
            chunks = lambda: parts.body(read)  # noqa: E731
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(
            _lead(chunks()), status_code=status, headers=headers, media_type=media
        )

    def not_allowed() -> JSONResponse:
        body = {"error": "method_not_allowed", "detail": "raw Zarr is read-only: GET or HEAD"}
        return JSONResponse(body, status_code=405, headers={"Allow": ALLOW})

    def options() -> Response:
        return Response(status_code=204, headers={"Allow": ALLOW})

    def raw_object(request: Request, site: str, key: str) -> Response:
        """One stored object of an image the bearer token covers (ranges, ETag, HEAD)."""
        return serve(request, bearer(request), site, key, vary=True)

    def signed_object(request: Request, token: str, site: str, key: str) -> Response:
        """One stored object below a signed URL's image path (no header needed)."""
        if len(token) > MAX_TOKEN:
            raise Unauthorized("the signed URL's token is malformed")
        return serve(request, signed(token), site, key, vary=False)

    # GET and HEAD as two operations, each with its own id in the API description
    for path, endpoint in (
        ("/zarr/{site}/{key:path}", raw_object),
        ("/signed/{token}/{site}/{key:path}", signed_object),
    ):
        for method in ("GET", "HEAD"):
            router.add_api_route(
                path, endpoint, methods=[method], response_model=None,
                operation_id=f"{endpoint.__name__}_{method.lower()}",
            )  # fmt: skip

    for path in ("/zarr/{site}/{key:path}", "/signed/{token}/{site}/{key:path}"):
        router.add_api_route(
            path, not_allowed, methods=["POST", "PUT", "PATCH", "DELETE"],
            include_in_schema=False, response_model=None,
        )  # fmt: skip
        router.add_api_route(
            path, options, methods=["OPTIONS"], include_in_schema=False, response_model=None
        )
    return router
