"""Where an index build keeps its temporary files (DuckDB spill, shard parts), and their cleanup.

Those files hold copies of index rows, so they must never outlive the build somewhere erasure
does not look:

- a **local store** keeps them inside itself, in the version folder being built
  (``_index/versions/<v>/_scratch/``): erasure scans them and garbage collection removes them
  with the version;
- **other stores** (S3, ``memory://``) use a private folder (mode 0700) on the building
  machine, ``<tmp>/atlas-index-scratch-<uid>/<store digest>/<v>-<lease owner>/``, named after
  the build's lease. The build removes it when it ends, however it ends; a build killed
  outright leaves it behind, and the next build, ``atlas index gc`` or erasure of the same
  store on that machine removes it once the lease is no longer live.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from atlas.errors import Forbidden
from atlas.index import layout
from atlas.index.lease import Lease, read_lease
from atlas.storage import Store

SCRATCH_NAME = "_scratch"


def in_store(store: Store) -> bool:
    """Whether this store keeps build scratch inside itself (local stores)."""
    return store.has_local_root


def local_root(store: Store, workdir: str | os.PathLike[str] | None = None) -> Path:
    """The private scratch folder on this machine for ``store`` (not created)."""
    uid = getattr(os, "getuid", lambda: 0)()
    base = Path(workdir or tempfile.gettempdir()) / f"atlas-index-scratch-{uid}"
    return base / hashlib.sha256(store.url.encode()).hexdigest()[:16]


def _check_private(path: Path, top: Path) -> None:
    """Raise :class:`Forbidden` unless ``path`` and its existing parents are private folders.

    Private: ``path`` and its parents up to ``top`` that exist are folders of this user that no
    one else may read or write.

    The base name is predictable, so in a shared temporary folder someone else may have made
    it first (world-writable, or a symbolic link elsewhere) to read or swap the rows.
    """
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # pragma: no cover - no owners to check (Windows)
        return
    for d in (path, *path.parents):
        try:
            st = d.lstat()
        except FileNotFoundError:
            if d == top:
                return
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            problem = "is not a folder (a symbolic link or a file)"
        elif st.st_uid != getuid():
            problem = f"belongs to another user (uid {st.st_uid})"
        elif st.st_mode & 0o077:
            problem = f"is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
        else:
            problem = ""
        if problem:
            raise Forbidden(
                f"the index build's scratch folder {d} {problem}; it would hold copies of index "
                "rows. Remove it, or point TMPDIR at a private folder, and rerun",
                location=str(d),
            )
        if d == top:
            return


def _private_dirs(path: Path, top: Path) -> None:
    """Create ``path`` and its missing parents, each readable by its owner only.

    The existing ones up to ``top`` are checked first, see :func:`_check_private`.
    """
    _check_private(path, top)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)


def make(store: Store, lease: Lease, workdir: str | os.PathLike[str] | None = None) -> Path:
    """Create the scratch folder of the build holding ``lease``.

    Raises
    ------
    Forbidden
        A folder on the way (this machine's ``atlas-index-scratch-<uid>`` folder included) is
        not private to this user: a symbolic link, another user's, or open to others.
    """
    if in_store(store):  # as private as the store itself; only the folder made here is checked
        path = top = Path(store.location.root) / layout.version_prefix(lease.version) / SCRATCH_NAME
    else:
        top = local_root(store, workdir).parent
        path = local_root(store, workdir) / f"{lease.version}-{lease.owner}"
    _private_dirs(path, top)
    return path


def remove(store: Store, path: Path) -> None:
    """Remove a build's scratch folder, and its private parents once they are empty."""
    shutil.rmtree(path, ignore_errors=True)
    if in_store(store):
        return
    for parent in (path.parent, path.parent.parent):
        try:
            parent.rmdir()  # only when empty: another build of this machine may be using it
        except OSError:
            return


def live(store: Store, name: str) -> bool:
    """Whether the scratch folder ``name`` (``<version>-<owner>``) belongs to a live build."""
    version, _, owner = name.partition("-")
    if not (version.startswith("v") and version[1:].isdigit()):
        return False
    lease, _ = read_lease(store, version)
    return lease is not None and lease.live() and lease.owner == owner


def sweep(store: Store, workdir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove this machine's scratch folders of ``store`` whose build is no longer live."""
    root = local_root(store, workdir)
    removed: list[Path] = []
    _check_private(root, root.parent)
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if live(store, entry.name):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def leftovers(store: Store, workdir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every file in this machine's scratch folders of ``store`` (live builds' included)."""
    root = local_root(store, workdir)
    _check_private(root, root.parent)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file())
