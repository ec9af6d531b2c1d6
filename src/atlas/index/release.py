"""Releases: a name for a set of pinned index versions across sites.

``atlas release create NAME`` records, for every site, the version it is on now. A query with
``--release NAME`` reads exactly those versions, so a training set can be rebuilt months later.
Releases live in each site's store under ``_releases/<name>.json`` (one object per site, written
create-if-absent: a release name is never reused). Erasure may amend a pinned version — the
subject disappears from it — and the release records that it was amended.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from atlas.errors import AlreadyExists, CorruptData, InvalidInput, NotFound
from atlas.index.build import require_store
from atlas.index.publish import read_current
from atlas.storage import Store

RELEASE_PREFIX = "_releases"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _key(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"invalid release name {name!r} (letters, digits, '.', '-', '_')")
    return f"{RELEASE_PREFIX}/{name}.json"


def create_release(stores: Mapping[str, Store], name: str, note: str = "") -> dict[str, str]:
    """Pin every site's current version under ``name``; returns site → version."""
    key = _key(name)
    pinned: dict[str, str] = {}
    for site, store in stores.items():
        require_store(store)
        pointer, _ = read_current(store)
        if pointer is None:
            raise NotFound(f"site {site!r} has no index to release; build it first", site=site)
        pinned[site] = pointer["version"]
    body = {"name": name, "created_unix": int(time.time()), "note": note, "versions": pinned}
    for site, store in stores.items():
        if not store.put_if_absent(key, json.dumps({**body, "site": site}).encode()):
            raise AlreadyExists(f"release {name!r} already exists at site {site!r}", site=site)
    return pinned


def load_release(stores: Mapping[str, Store], name: str) -> dict[str, str]:
    """Map site → pinned version of release ``name`` (read from each site that has it)."""
    key = _key(name)
    versions: dict[str, str] = {}
    found = False
    for site, store in stores.items():
        require_store(store)
        try:
            body: dict[str, Any] = json.loads(store.read_bytes(key))
        except NotFound:
            continue
        except ValueError as exc:
            raise CorruptData(
                f"release {name!r} at site {site!r} ({key}) is not valid JSON", site=site
            ) from exc
        found = True
        pinned = body.get("versions") if isinstance(body, dict) else None
        if not isinstance(pinned, dict) or site not in pinned:
            held = sorted(pinned) if isinstance(pinned, dict) else []
            raise NotFound(
                f"release {name!r} stored at site {site!r} pins no version for a site named "
                f"{site!r}; it holds {held}. Query with the site name the release was created "
                "with (--site), or create a new release",
                site=site,
            )
        versions[site] = str(pinned[site])
    if not found:
        raise NotFound(f"no release named {name!r} at any site")
    return versions
