"""Garbage collection of index versions that were never published (``atlas index gc``).

A build killed before it publishes leaves a claimed version folder with shards and no manifest
(or a manifest that never became current); those shards still hold subjects' rows. Garbage
collection removes such folders — every object but the claim, which stays behind as a
``collected`` tombstone so the version name is never reused — and never touches:

- a *published* version: the current one and every version it descends from (``parent`` links),
  and any whose lease ended as ``published`` (a build that published after the plan read
  ``_index/CURRENT``); the pointer is read again before anything is deleted;
- a version pinned by a release (``_releases/*.json``);
- a version whose build holds a live lease (:mod:`atlas.index.lease`): the lease is ended by
  compare-and-swap before anything is deleted, so a build that renews at the same moment wins
  and its folder is kept.

It also removes this machine's scratch folders of builds of the store that are no longer live
(:mod:`atlas.index.scratch`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from atlas.errors import CorruptData, NotFound
from atlas.index import layout, scratch
from atlas.index.build import require_store
from atlas.index.lease import CLAIM_NAME, claim_key, end_lease, read_lease
from atlas.index.publish import load_manifest, read_current
from atlas.index.release import RELEASE_PREFIX
from atlas.storage import Store


@dataclass(frozen=True)
class VersionFate:
    """What garbage collection does with one version folder, and why."""

    version: str
    remove: bool
    reason: str
    objects: int


@dataclass
class GcReport:
    """What a garbage collection removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    versions: list[VersionFate] = field(default_factory=list)
    objects_deleted: int = 0
    scratch_removed: list[str] = field(default_factory=list)

    @property
    def removed(self) -> list[str]:
        """Versions removed (or to be removed)."""
        return [f.version for f in self.versions if f.remove]


def folders(store: Store) -> dict[str, list[str]]:
    """Map each version to every object key in its folder."""
    out: dict[str, list[str]] = {}
    for key in store.list(f"{layout.INDEX_PREFIX}/versions/"):
        parts = key.split("/")
        if len(parts) >= 4:
            out.setdefault(parts[2], []).append(key)
    return out


def published_versions(store: Store) -> set[str]:
    """The current version and all its ancestors (following each manifest's ``parent``)."""
    pointer, _ = read_current(store)
    seen: set[str] = set()
    version = pointer["version"] if pointer else None
    while version and version not in seen:
        seen.add(version)
        try:
            version = load_manifest(store, version).get("parent")
        except (NotFound, CorruptData):
            break
    return seen


def pinned_versions(store: Store) -> set[str]:
    """Every version named by a release stored here (any site's entry: kept conservatively)."""
    pinned: set[str] = set()
    for key in store.list(f"{RELEASE_PREFIX}/"):
        if not key.endswith(".json"):
            continue
        try:
            body = json.loads(store.read_bytes(key))
            pinned.update(str(v) for v in body.get("versions", {}).values())
        except (NotFound, ValueError, AttributeError):
            continue
    return pinned


def plan(store: Store, now: float | None = None) -> list[VersionFate]:
    """Decide, for every version folder, whether it is garbage."""
    now = time.time() if now is None else now
    published = published_versions(store)
    pinned = pinned_versions(store)
    pointer, _ = read_current(store)
    current = pointer["version"] if pointer else None
    fates: list[VersionFate] = []
    for version, keys in sorted(folders(store).items()):
        others = [k for k in keys if k.rsplit("/", 1)[-1] != CLAIM_NAME]
        has_manifest = layout.manifest_key(version) in keys
        lease, _ = read_lease(store, version)

        def fate(remove: bool, reason: str, v: str = version, n: int = len(others)) -> None:
            fates.append(VersionFate(v, remove, reason, n))

        if version == current:
            fate(False, "current")
        elif version in published:
            fate(False, "published earlier (older versions stay readable)")
        elif version in pinned:
            fate(False, "pinned by a release")
        elif lease is not None and lease.live(now):
            fate(False, f"a build holds a live lease (expires in {lease.expires_in(now):.0f} s)")
        elif lease is not None and lease.state == "published":
            fate(False, "published (after this garbage collection read the current version)")
        elif not others:
            continue  # an ended claim alone: the tombstone that keeps the name used
        elif has_manifest:
            fate(True, "never published (its build lost the race to publish)")
        else:
            state = lease.state if lease is not None else "no claim"
            why = "its lease expired" if state == "building" else f"lease {state}"
            fate(True, f"unpublished: no manifest, {why} (a build stopped before publishing)")
    return fates


def remove_version(store: Store, version: str, now: float | None = None) -> int | None:
    """End the version's lease (unless live) and delete everything but its claim.

    Returns how many objects were deleted, or ``None`` when the lease turned out to be live
    (or was renewed at the same moment), or the version was published meanwhile, in which case
    nothing is deleted.
    """
    lease, token = read_lease(store, version)
    if lease is not None and (lease.live(now) or lease.state == "published"):
        return None
    if lease is None:
        tombstone = json.dumps({"state": "collected", "ended_unix": time.time()}).encode()
        if not store.put_if_absent(claim_key(version), tombstone):
            return None  # claimed this very moment by a new build
    elif lease.state != "collected" and (
        token is None or not end_lease(store, version, token, "collected")
    ):
        return None  # the owner renewed (or ended) it meanwhile
    if version in published_versions(store):
        return None  # published after the plan read the current version (its lease not ended)
    prefix = layout.version_prefix(version) + "/"
    keys = [k for k in store.list(prefix) if k != claim_key(version)]
    store.delete_many(keys)
    store.prune_empty_dirs(prefix)
    return len(keys)


def collect_garbage(
    store: Store,
    *,
    dry_run: bool = False,
    workdir: str | None = None,
    now: float | None = None,
    only: Callable[[str], bool] | None = None,
) -> GcReport:
    """Remove unpublished index versions whose builds are no longer running.

    Parameters
    ----------
    store:
        The site's store (it must exist).
    dry_run:
        Only report what would be removed.
    workdir:
        The scratch base folder builds of this store used on this machine, if not the default.
    now:
        The time to judge leases by (default: now).
    only:
        Restrict removal to versions for which this returns true (erasure uses it).
    """
    require_store(store)
    report = GcReport(dry_run=dry_run)
    fates = plan(store, now)
    for fate in fates:
        if fate.remove and only is not None and not only(fate.version):
            continue
        if fate.remove and not dry_run:
            deleted = remove_version(store, fate.version, now)
            if deleted is None:
                fate = VersionFate(fate.version, False, "its build renewed its lease", 0)
            else:
                report.objects_deleted += deleted
        report.versions.append(fate)
    # a kept version's scratch left by a build killed after it published (local stores)
    gone = set(report.removed)
    for version, keys in sorted(folders(store).items()):
        if version in gone:
            continue
        inside = f"{layout.version_prefix(version)}/{scratch.SCRATCH_NAME}"
        left = [k for k in keys if k.startswith(inside + "/")]
        if not left:
            continue
        lease, _ = read_lease(store, version)
        if not (lease is not None and lease.live(now)):
            if not dry_run:
                store.delete_many(left)
                report.objects_deleted += len(left)
            report.scratch_removed.append(inside)
    if dry_run:
        report.scratch_removed += [
            str(p) for p in sorted(scratch.local_root(store, workdir).glob("*"))
            if p.is_dir() and not scratch.live(store, p.name)
        ]  # fmt: skip
    else:
        report.scratch_removed += [str(p) for p in scratch.sweep(store, workdir)]
    return report
