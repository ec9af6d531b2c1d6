"""Local directories: zarr's ``LocalStore``, fsspec's local filesystem, tensorstore's ``file``.

Conditional writes use the filesystem's own atomic steps: a temporary file hard-linked to the
key (``os.link`` fails if the key exists) for create-if-absent, and an ``O_EXCL`` lock file
beside the key plus ``os.replace`` for compare-and-swap. Version tokens are the SHA-256 of the
bytes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import socket
import stat as stat_mode
import time
import uuid
from contextlib import suppress
from typing import Any

from atlas.errors import Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.storage.base import Backend, Hooked, ObjectStat
from atlas.storage.failures import translated
from atlas.storage.location import StoreLocation

__all__ = ["LOCK_STALE_AFTER_S", "LOCK_WAIT_S", "LocalBackend", "content_token"]

_LOCK_SUFFIX = ".atlas-lock"
_TMP_SUFFIX = ".atlas-tmp"
#: a local lock file older than this is taken to be left behind by a crashed process
LOCK_STALE_AFTER_S = 30.0
#: how long a local compare-and-swap waits for the key's lock before giving up
LOCK_WAIT_S = 60.0
# filesystems without hard links answer os.link with one of these
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}
)


def content_token(data: bytes) -> str:
    """The version token of local and ``memory://`` objects: SHA-256 of the bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


class LocalBackend(Backend):
    """A directory on this machine (``location.root`` is absolute)."""

    scheme = "file"
    has_local_root = True

    def make_fs(self, asynchronous: bool) -> Any:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(auto_mkdir=True)

    def zarr_store(self) -> Any:
        from zarr.storage import LocalStore

        return LocalStore(self.location.root)

    def kvstore_spec(self, location: StoreLocation) -> dict[str, Any]:
        return {"driver": "file", "path": location.root.rstrip("/") + "/"}

    def query_url(self, key: str) -> str:
        return os.path.join(self.location.root, key)

    def path_of(self, key: str) -> str:
        """The file that holds ``key``."""
        return os.path.join(self.location.root, *key.split("/"))

    async def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        return await asyncio.to_thread(_local_read, self.path_of(key))

    async def stat(self, key: str) -> ObjectStat | None:
        return await asyncio.to_thread(_local_stat, self.path_of(key))

    async def put_conditional(
        self, key: str, data: bytes, version: str | None, write_id: str
    ) -> bool:
        path = self.path_of(key)
        if version is None:
            return await asyncio.to_thread(_local_create, path, data)
        return await asyncio.to_thread(_local_swap, path, data, version)

    def ensure_reachable(self, create: bool, hooked: Hooked) -> None:
        loc = self.location
        root = loc.root
        with translated(loc, op="open"):
            if not os.path.exists(root):
                if not create:
                    raise NotFound(
                        f"directory {root} does not exist", site=loc.site, location=loc.url
                    )
                os.makedirs(root, exist_ok=True)
            if not os.path.isdir(root):
                raise InvalidInput(
                    f"{root} is a file, not a directory", site=loc.site, location=loc.url
                )
            if create and not os.access(root, os.W_OK):
                raise Forbidden(
                    f"directory {root} is not writable", site=loc.site, location=loc.url
                )

    def prune_empty_dirs(self, prefix: str) -> None:
        prune_empty_dirs(self.location.child(prefix).root)

    def stored_size(self, prefix: str) -> int:
        root = os.path.join(self.location.root, prefix)
        return sum(
            os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files
        )


def prune_empty_dirs(path: str) -> None:
    """Remove empty directories below and including ``path``."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirnames, _files in os.walk(path, topdown=False):
        with suppress(OSError):
            os.rmdir(dirpath)


# -- the atomic steps -------------------------------------------------------------------------
def _fsync_dir(directory: str) -> None:
    """Make a new directory entry durable (best effort: not every platform can open dirs)."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_parent(path: str) -> str:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except FileExistsError as exc:  # a file where the key's directory should be
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", exc.filename) from exc
    return directory


def _write_temp(path: str, data: bytes) -> str:
    """Write ``data`` durably to a new temporary file beside ``path``; returns its path."""
    directory = _make_parent(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _local_read(path: str) -> tuple[bytes, str] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None
    return data, content_token(data)


def _local_stat(path: str) -> ObjectStat | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat_mode.S_ISREG(st.st_mode):
        return None
    # writes replace the file (a new inode) or change its mtime: either changes the version
    return ObjectStat(st.st_size, f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}")


def _local_create(path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists (temp file + ``os.link``)."""
    tmp = _write_temp(path, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            with _LocalLock(path):
                if os.path.lexists(path):
                    return False
                os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
        return True
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def _local_swap(path: str, data: bytes, version: str) -> bool:
    """Replace ``path`` with ``data`` if its content token is ``version`` (under its lock)."""
    if not os.path.isdir(os.path.dirname(path)):
        return False  # no directory, so no object at any version
    with _LocalLock(path):
        current = _local_read(path)
        if current is None or current[1] != version:
            return False
        tmp = _write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(os.path.dirname(path))
        return True


class _LocalLock:
    """An ``O_EXCL`` lock file beside a local key, safe across threads, processes and hosts.

    A lock file older than :data:`LOCK_STALE_AFTER_S` is taken to be left by a crashed
    process and broken; waiting longer than :data:`LOCK_WAIT_S` raises
    :class:`StoreUnavailable`.
    """

    def __init__(self, path: str) -> None:
        self.path = path + _LOCK_SUFFIX
        self.token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}".encode()

    def __enter__(self) -> _LocalLock:
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _break_stale_lock(self.path):
                    continue
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"the lock file {self.path} has been held for more than {LOCK_WAIT_S:g} s;"
                        " another writer is slow or stuck (remove the file if no writer runs)"
                    ) from None
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)
                continue
            try:
                os.write(fd, self.token)
            finally:
                os.close(fd)
            return self

    def __exit__(self, *exc: object) -> None:
        # Only remove our own lock: a holder stalled past the stale limit may have lost it.
        with suppress(OSError):
            with open(self.path, "rb") as f:
                owner = f.read()
            if owner == self.token:
                os.unlink(self.path)


def _break_stale_lock(lock: str) -> bool:
    """Remove ``lock`` if it is older than :data:`LOCK_STALE_AFTER_S`; ``True`` if removed."""
    try:
        before = os.stat(lock)
    except FileNotFoundError:
        return True  # released meanwhile: try again at once
    if time.time() - before.st_mtime < LOCK_STALE_AFTER_S:
        return False
    # Move it aside atomically, then check it is the stale file we judged: another waiter may
    # have broken the same stale lock and taken a fresh one in between. Then put that one back
    # (os.link fails if yet another lock appeared; that narrow window is the one imprecision).
    grave = f"{lock}.{uuid.uuid4().hex}.stale"
    try:
        os.rename(lock, grave)
    except FileNotFoundError:
        return True
    try:
        after = os.stat(grave)
        if (after.st_ino, after.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
            with suppress(OSError):
                os.link(grave, lock)
            return False
        return True
    finally:
        with suppress(FileNotFoundError):
            os.unlink(grave)
