"""Stable pages of the series search: the order, the cursor and the bound it sets.

Series are listed in ``(series_id, volume, site)`` order, a total order every site's index can
apply on its own, so a page is the first ``limit`` rows of the merge of each site's first
``limit + 1`` rows after the cursor. The cursor is opaque to clients (URL-safe base64 of a
small JSON) and carries the last row's key and a digest of the filter it was made for: a cursor
given with another filter, or tampered with, is refused with a clear 400. It carries no
permission: the grant and the filter apply on every page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from atlas.errors import InvalidInput
from atlas.index.filter import And, Compare, Expr, Or

__all__ = ["Cursor", "after", "filter_digest"]

#: the columns of the order, in order
ORDER = ("series_id", "volume", "site")

_MAX_CURSOR = 1024


def filter_digest(text: str | None) -> str:
    """A short digest of the filter text a cursor belongs to."""
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Cursor:
    """The last row of a page and the filter of its search."""

    series_id: str
    volume: int
    site: str
    digest: str

    def encode(self) -> str:
        """The opaque text given to clients."""
        doc = {"s": self.series_id, "v": self.volume, "t": self.site, "f": self.digest}
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str, digest: str) -> Cursor:
        """Read a cursor made for the filter of ``digest``; :class:`InvalidInput` otherwise."""
        bad = InvalidInput("invalid cursor: pass the 'next' value of the previous page unchanged")
        if not text or len(text) > _MAX_CURSOR:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            doc: Any = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise bad from None
        if not isinstance(doc, dict) or set(doc) != {"s", "v", "t", "f"}:
            raise bad
        s, v, t, f = doc["s"], doc["v"], doc["t"], doc["f"]
        if (
            not isinstance(s, str)
            or not isinstance(t, str)
            or not isinstance(f, str)
            or isinstance(v, bool)
            or not isinstance(v, int)
            or v < 0
        ):
            raise bad
        if f != digest:
            raise InvalidInput("invalid cursor: it belongs to a search with another filter (q)")
        return cls(s, v, t, f)

    @classmethod
    def of_row(cls, row: dict[str, Any], digest: str) -> Cursor:
        """The cursor just after ``row``."""
        return cls(str(row["series_id"]), int(row["volume"]), str(row["site"]), digest)


def after(cursor: Cursor) -> Expr:
    """The filter of the rows after ``cursor`` in :data:`ORDER`."""
    s, v, t = cursor.series_id, cursor.volume, cursor.site
    return Or(
        (
            Compare("series_id", ">", s),
            And((Compare("series_id", "==", s), Compare("volume", ">", v))),
            And(
                (Compare("series_id", "==", s), Compare("volume", "==", v), Compare("site", ">", t))
            ),
        )
    )


def sort_key(row: dict[str, Any]) -> tuple[str, int, str]:
    """The order of rows within and across sites."""
    return (str(row["series_id"]), int(row["volume"]), str(row["site"]))
