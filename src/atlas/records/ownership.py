"""What a store belongs to: its site, and the collection of each series in it.

- **Site**: the first ingest into a store writes ``_site.json`` (``{"site": NAME}``) with a
  create-if-absent write (:meth:`Store.put_if_absent`, so of two first ingests with different
  names exactly one wins). Every later ingest, index build or ``--store`` command names the
  site it means; a different name is refused with :class:`ConfigError`, because every row
  carries its site name and an index built under another name would mislabel them.
- **Series**: a series (by its pseudonymous id) belongs to one collection of a site. Finishing
  a series writes ``_journal/_owners/<series_id>.json`` (``{"collection": NAME}``); ingesting
  the same series into another collection is refused, so that image, series and annotation
  ids stay unique within a site and a training set never sees one scan twice under two ids.
  Erasing the subject removes the owner object with the series' other objects.

Both objects hold names only (site, collection), never an original or pseudonymous id.
"""

from __future__ import annotations

import json
import os

from atlas.errors import ConfigError, NotFound
from atlas.records.journal import JOURNAL_PREFIX
from atlas.storage import Store

SITE_KEY = "_site.json"
OWNERS_PREFIX = f"{JOURNAL_PREFIX}/_owners"


def recorded_site(store: Store) -> str | None:
    """The site recorded in ``store``, or ``None`` if nothing was ingested yet (reads only)."""
    if store.has_local_root and not os.path.isdir(store.location.root):
        return None  # no store yet: reading must not create its folder
    try:
        data = json.loads(store.read_bytes(SITE_KEY))
    except NotFound:
        return None
    except ValueError:
        raise ConfigError(
            f"{SITE_KEY} in {store.url} is not valid JSON; it records the site the store "
            "belongs to: restore it or remove it",
            location=store.url,
        ) from None
    site = data.get("site") if isinstance(data, dict) else None
    if not isinstance(site, str) or not site:
        raise ConfigError(f"{SITE_KEY} in {store.url} names no site", location=store.url)
    return site


def _refuse(store: Store, recorded: str, given: str) -> ConfigError:
    return ConfigError(
        f"the store {store.url} belongs to site {recorded!r} (recorded at its first ingest), "
        f"not {given!r}: pass --site {recorded}, or use another store for site {given!r}",
        location=store.url,
    )


def check_site(store: Store, site: str | None) -> None:
    """Refuse ``site`` if the store records another site (nothing is written)."""
    if not site:
        return
    recorded = recorded_site(store)
    if recorded is not None and recorded != site:
        raise _refuse(store, recorded, site)


def claim_site(store: Store, site: str) -> None:
    """Record ``site`` as the store's site if none is recorded; refuse another name."""
    if store.site and store.site != site:
        raise ConfigError(
            f"the store handle is for site {store.site!r} but the ingest names site {site!r}",
            location=store.url,
        )
    check_site(store, site)
    payload = json.dumps({"site": site, "format": 1}, sort_keys=True).encode()
    if not store.put_if_absent(SITE_KEY, payload):
        check_site(store, site)  # another first ingest won the race: same name or refuse


def owner_key(series_id: str) -> str:
    """Where the collection of a series is recorded."""
    return f"{OWNERS_PREFIX}/{series_id}.json"


def series_collection(store: Store, series_id: str) -> str | None:
    """The collection a series was ingested into, or ``None``."""
    try:
        data = json.loads(store.read_bytes(owner_key(series_id)))
    except (NotFound, ValueError):
        return None
    value = data.get("collection") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def record_series(store: Store, series_id: str, collection: str) -> None:
    """Record the collection of a finished series (first writer wins)."""
    payload = json.dumps({"collection": collection}, sort_keys=True).encode()
    store.put_if_absent(owner_key(series_id), payload)


def refusal(store: Store, series_id: str, collection: str) -> str | None:
    """Why the series may not be ingested into ``collection`` (``None``: it may)."""
    owner = series_collection(store, series_id)
    if owner is None or owner == collection:
        return None
    return (
        f"this series is already in collection {owner!r} of this site; a series belongs to "
        f"one collection (ids stay unique): erase it there first, or ingest it into {owner!r}"
    )


__all__ = [
    "OWNERS_PREFIX",
    "SITE_KEY",
    "check_site",
    "claim_site",
    "owner_key",
    "record_series",
    "recorded_site",
    "refusal",
    "series_collection",
]
