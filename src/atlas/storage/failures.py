"""Turn the many exceptions of the storage libraries into :mod:`atlas.errors`.

s3fs, botocore, aiohttp and the OS each report "wrong key", "no such bucket" and "endpoint down"
differently. :func:`translate` maps them onto ``Forbidden``, ``NotFound`` and
``StoreUnavailable`` with a message that names the site and the URL, so a user knows which data
provider to call and what to fix.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from contextlib import contextmanager

from atlas.errors import AtlasError, Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.storage.location import StoreLocation
from atlas.storage.registry import backend_class

_UNAVAILABLE_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "FSTimeoutError",
    "ProxyConnectionError",
    "HTTPClientError",
}
_FORBIDDEN_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403")
_NOT_FOUND_CODES = ("NoSuchBucket", "NoSuchKey", "404")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _where(location: StoreLocation, key: str | None) -> str:
    where = location.url + (f" (key {key!r})" if key else "")
    return where


def translate(
    exc: BaseException, location: StoreLocation, key: str | None = None, op: str = "access"
) -> AtlasError | None:
    """Return the Atlas error for ``exc`` raised while doing ``op`` on ``key``, or ``None``.

    ``None`` means the exception is not a storage failure we understand; the caller re-raises it.
    """
    if isinstance(exc, AtlasError):
        return exc
    site = location.site
    who = f"site {site!r} " if site else ""
    where = _where(location, key)
    for e in _chain(exc):
        name = type(e).__name__
        text = str(e)
        if isinstance(e, PermissionError) or any(c in text for c in _FORBIDDEN_CODES[:3]):
            hint = backend_class(location.scheme).permission_hint(location)
            return Forbidden(
                f"{who}refused to {op} {where}: {_short(text)}; {hint}",
                site=site,
                location=location.url,
            )
        if name in _UNAVAILABLE_NAMES or isinstance(
            e, ConnectionError | TimeoutError | asyncio.TimeoutError
        ):
            return StoreUnavailable(
                f"{who}store {location.url} is unreachable"
                + (f" at {location.endpoint}" if location.endpoint else "")
                + (f" ({name}: {_short(text)})" if name == "RequestDeadline" else f" ({name})")
                + "; is the endpoint up? Retried within bounded timeouts.",
                site=site,
                location=location.url,
            )
        if isinstance(e, NotADirectoryError):
            return InvalidInput(
                f"{who}cannot {op} {where}: a file is in the way of a directory",
                site=site,
                location=location.url,
            )
        if isinstance(e, FileNotFoundError) or any(c in text for c in _NOT_FOUND_CODES[:2]):
            what = "bucket" if "bucket" in text.lower() else "object"
            return NotFound(
                f"{who}cannot {op} {where}: no such {what}", site=site, location=location.url
            )
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            return StoreUnavailable(
                f"{who}cannot {op} {where}: {e.strerror}", site=site, location=location.url
            )
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def translated(
    location: StoreLocation, key: str | None = None, op: str = "access"
) -> Iterator[None]:
    """Context manager: re-raise storage failures inside it as :mod:`atlas.errors` exceptions."""
    try:
        yield
    except AtlasError:
        raise
    except Exception as exc:
        mapped = translate(exc, location, key, op)
        if mapped is None:
            raise
        raise mapped from exc


#: names in a query engine's error text (DuckDB reads through fsspec) meaning "no answer"
_QUERY_UNAVAILABLE = ("FSTimeoutError", "RequestDeadline", *sorted(_UNAVAILABLE_NAMES))


def translate_query_error(exc: BaseException, location: StoreLocation) -> StoreUnavailable | None:
    """:class:`StoreUnavailable` for a DuckDB error caused by the store not answering, or ``None``.

    DuckDB reports a failure of the fsspec filesystem it reads through as its own error, with
    the Python exception only in the text; the site's time limits still bound the wait.
    """
    if isinstance(exc, AtlasError):
        return None
    text = str(exc)
    for name in _QUERY_UNAVAILABLE:
        if name in text:
            who = f"site {location.site!r} " if location.site else ""
            limits = location.timeouts
            return StoreUnavailable(
                f"{who}store {location.url} did not answer a query's read ({name}) within its "
                f"time limits (deadline {limits.deadline:g} s per request, connect "
                f"{limits.connect:g} s, read {limits.read:g} s); is the endpoint up?",
                site=location.site,
                location=location.url,
            )
    return None
