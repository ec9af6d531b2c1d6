"""The index's version pointer and manifests: reading them, and publishing by compare-and-swap.

``_index/CURRENT`` is a small JSON pointer ``{"version": ..., "manifest_sha256": ...}`` (an
erasure's fence adds a ``fence`` field). It only ever changes by one conditional write
against the version token it was read at (:meth:`atlas.storage.Store.put_if_match`), so two
writers racing each other cannot both win and readers never see half a version. Builds
publish new versions here, erasure publishes a version without the subject, re-points
``CURRENT`` at an amended manifest and fences stale builds — all through :func:`write_manifest`
and :func:`swap_current`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from atlas.errors import AtlasError, CorruptData, NotFound
from atlas.index import layout
from atlas.storage import Store, parse_json_object

__all__ = [
    "ConcurrentBuild",
    "load_manifest",
    "publish",
    "read_current",
    "swap_current",
    "write_manifest",
]


class ConcurrentBuild(AtlasError):
    """Another build published a version first; rerun the build on top of it."""


def read_current(store: Store) -> tuple[dict[str, Any] | None, str | None]:
    """``(pointer, version token)`` of ``_index/CURRENT``; ``(None, None)`` before any build."""
    try:
        raw, token = store.read_versioned(layout.CURRENT_KEY)
    except NotFound:
        return None, None
    what = f"index pointer {layout.CURRENT_KEY} in {store.url}"
    return parse_json_object(raw, what, site=store.site, location=store.url), token


def load_manifest(store: Store, version: str, sha256: str | None = None) -> dict[str, Any]:
    """Read and check one version's manifest (against the pointer's checksum when given)."""
    key = layout.manifest_key(version)
    raw = store.read_bytes(key)
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise CorruptData(
            f"index manifest {key} in {store.url} fails its checksum; the index version "
            f"{version} is damaged (older versions stay readable: pin one, or rebuild)",
            site=store.site,
            location=store.url,
        )
    return parse_json_object(raw, f"index manifest {key}", site=store.site)


def write_manifest(store: Store, version: str, manifest: dict[str, Any]) -> str:
    """Write ``manifest`` as version ``version``'s manifest; returns the SHA-256 of its bytes.

    The bytes are canonical (sorted keys); the digest is what a pointer to it records.
    """
    body = json.dumps(manifest, indent=1, sort_keys=True, default=str).encode()
    store.write_bytes(layout.manifest_key(version), body)
    return hashlib.sha256(body).hexdigest()


def swap_current(store: Store, pointer: dict[str, Any], expected_token: str | None) -> bool:
    """Set ``_index/CURRENT`` to ``pointer`` if it is still at ``expected_token``.

    Parameters
    ----------
    store:
        The site's store.
    pointer:
        The new pointer (``version``, ``manifest_sha256`` and, for a fence, ``fence``).
    expected_token:
        The version token :func:`read_current` returned; ``None`` when there was no pointer
        (the write then succeeds only if there still is none).

    Returns
    -------
    bool
        Whether the pointer was swapped; ``False`` when someone changed it meanwhile.
    """
    body = json.dumps(pointer, sort_keys=True).encode()
    return store.put_if_match(layout.CURRENT_KEY, body, expected_token)


def publish(store: Store, manifest: dict[str, Any], expected_token: str | None) -> str:
    """Write the manifest, then swing ``_index/CURRENT`` to it in one compare-and-swap.

    Returns the published version. Raises :class:`ConcurrentBuild` when ``CURRENT`` is no
    longer at ``expected_token`` (the manifest stays written, unpublished).
    """
    version: str = manifest["version"]
    digest = write_manifest(store, version, manifest)
    pointer = {"version": version, "manifest_sha256": digest}
    if not swap_current(store, pointer, expected_token):
        raise ConcurrentBuild(
            f"another index build of {store.url} published first; version {version} was "
            "written but not published — rerun `atlas index build` to build on the new version",
            site=store.site,
            location=store.url,
        )
    return version
