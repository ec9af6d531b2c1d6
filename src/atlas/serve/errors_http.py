"""Every error as one line of JSON: ``{"error": kind, "detail": message}`` with its status.

:func:`install_error_handlers` maps each :mod:`atlas.errors` class to its HTTP status, reshapes
FastAPI's request validation errors and Starlette's own 404/405 into the same body, and turns
anything unexpected into a 500 that names no data (the traceback stays in the server log).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atlas.errors import (
    AlreadyExists,
    AtlasError,
    CorruptData,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    StoreUnavailable,
    Unauthorized,
)

__all__ = ["ERROR_STATUS", "error_body", "error_response", "install_error_handlers"]

log = logging.getLogger("atlas.serve")

#: status and ``error`` kind of each Atlas error class (the first match in order wins)
ERROR_STATUS: tuple[tuple[type[AtlasError], int, str], ...] = (
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (AlreadyExists, 409, "conflict"),
    (InvalidInput, 400, "invalid_input"),
    (Overloaded, 503, "overloaded"),
    (StoreUnavailable, 503, "store_unavailable"),
    (CorruptData, 502, "corrupt_data"),
)

_HTTP_KINDS = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}

#: how long a client should wait before retrying a store that did not answer
STORE_RETRY_S = 5


def one_line(text: str, limit: int = 500) -> str:
    """The first line of ``text``, at most ``limit`` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def error_body(kind: str, detail: str) -> dict[str, str]:
    """The JSON body of every error response."""
    return {"error": kind, "detail": one_line(detail)}


def error_response(exc: AtlasError) -> JSONResponse:
    """The response for an Atlas error (status, one-line body, ``Retry-After`` if any)."""
    status, kind = next(
        ((code, name) for cls, code, name in ERROR_STATUS if isinstance(exc, cls)),
        (500, "internal"),
    )
    headers: dict[str, str] = {}
    detail = str(exc)
    if isinstance(exc, CorruptData):
        # the message names chunks and store objects: keep it in the server log only
        log.error("corrupt data: %s", one_line(detail))
        detail = "stored data failed its checksum or could not be decoded; the operator is told"
    elif isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = str(STORE_RETRY_S)
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 500:
        log.error("unexpected Atlas error: %s", one_line(detail))
        detail = "internal error"
    return JSONResponse(error_body(kind, detail), status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = [str(x) for x in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else ".".join(loc)
        if loc and loc[0] == "body":
            where = "request body" + (f" field {'.'.join(loc[1:])!r}" if len(loc) > 1 else "")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the one-line JSON body."""

    async def atlas_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AtlasError)
        return error_response(exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(error_body("invalid_input", _validation_detail(exc)), status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = _HTTP_KINDS.get(exc.status_code, "error" if exc.status_code < 500 else "internal")
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        headers: dict[str, Any] = dict(exc.headers or {})
        return JSONResponse(error_body(kind, detail), status_code=exc.status_code, headers=headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)

    app.add_exception_handler(AtlasError, atlas_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
