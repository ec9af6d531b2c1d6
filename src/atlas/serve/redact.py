"""Tokens shortened for logs: :func:`redact`, :func:`redact_path`, :func:`redact_text`.

A token or a signed URL is a credential: logs, error messages and the audit trail show its
first 6 characters and ``…`` at most. :class:`RedactTokens` does it to every log record
(attach it to uvicorn's loggers: the access log prints request paths, and a signed URL's path
holds its token).
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactTokens", "redact", "redact_path", "redact_text"]

_SHOWN = 6
#: a JWT-shaped run of characters (a JSON header, three base64url parts), wherever it stands
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_SIGNED = re.compile(r"(/signed/)([^/?#\s]+)")
_BEARER = re.compile(r"(?i)(bearer\s+)(\S+)")


def redact(token: str | None) -> str:
    """A token as logs may show it: its first 6 characters and ``…`` (``-`` for none)."""
    if not token:
        return "-"
    return token[:_SHOWN] + "…"


def redact_path(path: str) -> str:
    """A request path with the token of ``/signed/<token>/...`` shortened (see :func:`redact`)."""
    return _SIGNED.sub(lambda m: m.group(1) + redact(m.group(2)), path)


def redact_text(text: str) -> str:
    """``text`` with every signed-URL token, bearer token and JWT-shaped string shortened."""
    text = redact_path(text)
    text = _BEARER.sub(lambda m: m.group(1) + redact(m.group(2)), text)
    return _JWT.sub(lambda m: redact(m.group(0)), text)


class RedactTokens(logging.Filter):
    """A logging filter shortening tokens in every record's message and arguments.

    Attach it to the ``uvicorn.access`` and ``uvicorn.error`` loggers (or a handler): the
    access log line of ``GET /signed/<token>/...`` then shows ``/signed/eyJhbG…/...``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact_text(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True
