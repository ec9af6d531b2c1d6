"""What every route shares: :class:`ServeContext` (stores, reader, catalogs, series lookups).

A route never reads a store or the catalog on its own: it asks the context for the series a
caller names (:meth:`ServeContext.series`) or for the image a raw key lies in
(:meth:`ServeContext.image_for_key`), and the context checks the caller's :class:`Grant`
(site, collection, signed path prefix) and the purpose's consent (the catalog is opened with
the grant's purpose, so a subject without that scope is not found) before anything is read.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atlas.errors import Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.index.catalog import Atlas, open_atlas
from atlas.read import ImageRef, Reader
from atlas.serve.config import ServeConfig
from atlas.serve.grants import Grant
from atlas.storage import Store

__all__ = ["SeriesEntry", "ServeContext"]

#: catalog handles are reopened this often, so newly published index versions are seen
CATALOG_REFRESH_S = 30.0
#: series lookups remembered (each only while the catalog handle it came from is in use)
SERIES_MEMO = 4096


@dataclass(frozen=True)
class SeriesEntry:
    """One readable volume of a series, as the catalog lists it (pseudonymous ids only)."""

    site: str
    collection: str
    subject_id: str
    series_id: str
    volume: int
    image_path: str
    row: Mapping[str, Any]

    def ref(self, label: str | None = None) -> ImageRef:
        """The image (or one of its label images) for :class:`atlas.read.Reader`."""
        return ImageRef(self.site, self.image_path, label)


class ServeContext:
    """Stores, one :class:`~atlas.read.Reader`, and catalogs opened per purpose.

    Parameters
    ----------
    config
        The server's settings.
    reader
        The reader of every route (default: a tensorstore reader over ``config.stores``).
    """

    def __init__(self, config: ServeConfig, reader: Reader | None = None) -> None:
        self.config = config
        self.stores: dict[str, Store] = dict(config.stores)
        self.reader = reader if reader is not None else Reader(self.stores)
        self._lock = threading.Lock()
        self._atlases: dict[str, tuple[float, Atlas]] = {}
        self._paths: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._series: dict[tuple[str, str, int], tuple[Atlas, SeriesEntry]] = {}

    # -- catalogs -------------------------------------------------------------------------
    def atlas(self, purpose: str) -> Atlas:
        """The federated catalog as seen under ``purpose`` (reopened every 30 s)."""
        now = time.monotonic()
        with self._lock:
            hit = self._atlases.get(purpose)
        if hit is not None and now - hit[0] < CATALOG_REFRESH_S:
            return hit[1]
        atlas = open_atlas(self.stores, purpose=purpose)
        with self._lock:
            self._atlases[purpose] = (now, atlas)
        return atlas

    def sites_for(self, grant: Grant) -> list[str]:
        """The sites the grant covers, sorted."""
        return sorted(s for s in self.stores if grant.allows_site(s))

    # -- series ---------------------------------------------------------------------------
    def series(self, grant: Grant, series_id: str, volume: int = 0) -> SeriesEntry:
        """The series volume ``series_id``/``volume``, if the grant and consent allow it.

        Raises
        ------
        InvalidInput
            The id or volume is malformed.
        NotFound
            No such series is visible under the grant's purpose (the message names the id).
        Forbidden
            The series exists but the grant does not cover its site, collection or path.
        """
        if not isinstance(series_id, str) or not series_id or len(series_id) > 128:
            raise InvalidInput("series id must be a non-empty string of at most 128 characters")
        if isinstance(volume, bool) or not isinstance(volume, int) or volume < 0:
            raise InvalidInput(f"volume must be an integer >= 0, got {volume!r}")
        key = (grant.purpose, series_id, volume)
        atlas = self.atlas(grant.purpose)
        with self._lock:
            hit = self._series.get(key)
        if hit is not None and hit[0] is atlas:  # looked up in this very catalog handle
            grant.check(hit[1].site, hit[1].collection, hit[1].image_path)
            return hit[1]
        result = atlas.get("series", series_id=series_id)
        rows = [] if result.value is None else result.value.to_pylist()
        entries = [_entry(r) for r in rows if r["volume"] == volume]
        if not entries:
            if result.partial:
                raise StoreUnavailable(
                    f"series {series_id!r} not found on the sites that answered; "
                    f"site(s) {sorted(result.missing_sites)} did not answer, try again later"
                )
            raise NotFound(f"series {series_id!r} (volume {volume}) not found")
        entry = entries[0]
        with self._lock:
            if len(self._series) >= SERIES_MEMO:
                self._series.clear()
            self._series[key] = (atlas, entry)
        grant.check(entry.site, entry.collection, entry.image_path)
        return entry

    def image_for_key(self, grant: Grant, site: str, key: str) -> tuple[SeriesEntry, str]:
        """The series whose image holds the raw store key ``key``, and the key inside it.

        Only keys inside an image the catalog lists (under the grant's purpose) are found:
        the index, audit, staging and consent objects never are.

        Raises
        ------
        Forbidden
            The grant does not cover ``site`` or the image.
        NotFound
            ``key`` lies in no listed image.
        """
        if site not in self.stores:
            raise NotFound(f"unknown site {site!r}")
        if not grant.allows_site(site):
            raise Forbidden(f"token {grant.token_id!r} does not cover site {site!r}")
        key = key.strip("/")
        paths = self._image_paths(grant.purpose, site)
        i = bisect.bisect_right(paths, key)
        while i > 0:
            path = paths[i - 1]
            if key == path or key.startswith(path + "/"):
                rows = self.atlas(grant.purpose).series.where(site=site, image_path=path)
                table = rows.to_arrow().value
                if table is None or table.num_rows == 0:
                    break
                entry = _entry(table.to_pylist()[0])
                grant.check(entry.site, entry.collection, entry.image_path)
                return entry, key[len(path) :].lstrip("/")
            if not key.startswith(path.split("/")[0]):
                break
            i -= 1
        raise NotFound(f"no image of site {site!r} holds {key!r}")

    def _image_paths(self, purpose: str, site: str) -> list[str]:
        now = time.monotonic()
        with self._lock:
            hit = self._paths.get((purpose, site))
        if hit is not None and now - hit[0] < CATALOG_REFRESH_S:
            return hit[1]
        query = self.atlas(purpose).series.where(site=site).select("image_path")
        table = query.to_arrow().value
        column = [] if table is None else table.column("image_path").to_pylist()
        paths = sorted({p.strip("/") for p in column if p})
        with self._lock:
            self._paths[(purpose, site)] = (now, paths)
        return paths

    def close(self) -> None:
        """Release the reader's resources."""
        self.reader.close()


def _entry(row: Mapping[str, Any]) -> SeriesEntry:
    return SeriesEntry(
        site=str(row["site"]),
        collection=str(row["collection"]),
        subject_id=str(row["subject_id"]),
        series_id=str(row["series_id"]),
        volume=int(row["volume"]),
        image_path=str(row["image_path"]).strip("/"),
        row=dict(row),
    )
