"""The one exception hierarchy of Atlas.

Every error Atlas raises on purpose is an :class:`AtlasError`. Each subclass also derives
from the closest built-in exception, so callers that already catch ``ValueError``,
``PermissionError``, ``LookupError`` or ``ConnectionError`` keep working.

Messages name *where* the problem is (site, store URL, key) and what a user can do about it.
They never contain pixel data, credentials or original (identifying) values.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "AtlasError",
    "ConfigError",
    "CorruptData",
    "Forbidden",
    "IncompleteImage",
    "InjectedFault",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "StoreUnavailable",
    "Unauthorized",
]


class AtlasError(Exception):
    """Base class of every error Atlas raises on purpose.

    ``site`` and ``location`` are optional context (the data provider and the store URL or key)
    that callers can read without parsing the message.
    """

    def __init__(self, message: str, *, site: str | None = None, location: str | None = None):
        super().__init__(message)
        self.message = message
        self.site = site
        self.location = location

    def __str__(self) -> str:
        parts = [self.message]
        if self.site and f"site {self.site!r}" not in self.message:
            parts.append(f"[site {self.site!r}]")
        return " ".join(parts)


class InvalidInput(AtlasError, ValueError):
    """The caller passed something Atlas cannot use (wrong dtype, shape, spacing, URL, ...)."""


class ConfigError(InvalidInput):
    """A settings or sites file is malformed or names something that does not exist."""


class NotFound(AtlasError, LookupError):
    """A bucket, prefix, image, level or key does not exist."""


class IncompleteImage(NotFound):
    """An image exists only partially: its write was interrupted or is still running."""


class AlreadyExists(AtlasError, FileExistsError):
    """Refusing to replace something that exists (pass ``overwrite=True`` to replace it)."""


class Forbidden(AtlasError, PermissionError):
    """The store refused the credentials or the operation (wrong key, no write permission)."""


class Unauthorized(AtlasError, PermissionError):
    """No credentials, or credentials that cannot be accepted (bad signature, expired, revoked).

    :class:`Forbidden` is for valid credentials that do not cover what was asked.
    """


class Overloaded(AtlasError):
    """A server has more work queued than it accepts; retry after ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        site: str | None = None,
        location: str | None = None,
    ) -> None:
        super().__init__(message, site=site, location=location)
        self.retry_after = retry_after


class StoreUnavailable(AtlasError, ConnectionError):
    """The store could not be reached in time (endpoint down, DNS, timeout). Often transient."""


class InjectedFault(StoreUnavailable):
    """A fault injected on purpose by :class:`atlas.storage.wrappers.FaultStore` (tests, chaos)."""


class CorruptData(AtlasError):
    """Stored bytes fail their checksum or cannot be decoded; the message names the chunk."""
