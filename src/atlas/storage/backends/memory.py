"""``memory://`` stores: fsspec's process-wide memory filesystem, seen through zarr's FsspecStore.

The bytes live in this Python process only: worker processes and tensorstore cannot see them
(decision 0006), so the backend is :attr:`~atlas.storage.base.Backend.process_local` and
refuses a tensorstore spec. Conditional writes hold one process-wide lock around the compare
and the write.
"""

from __future__ import annotations

import threading
from typing import Any

from zarr.storage import FsspecStore

from atlas.errors import InvalidInput
from atlas.storage.backends.local import content_token
from atlas.storage.base import Backend, ObjectStat
from atlas.storage.location import StoreLocation

__all__ = ["MemoryBackend", "MemoryZarrStore"]

_MEMORY_LOCK = threading.Lock()
#: serialises conditional writes to memory:// stores (one process holds all of them)
_CONDITIONAL_LOCK = threading.Lock()


class MemoryZarrStore(FsspecStore):
    """zarr's FsspecStore on the memory filesystem; it pickles as its path (same process)."""

    def __reduce__(self) -> Any:
        return (_reopen, (self.path, self.read_only))


def _open_memory(path: str, read_only: bool = False) -> MemoryZarrStore:
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
    from fsspec.implementations.memory import MemoryFileSystem

    with _MEMORY_LOCK:
        afs = AsyncFileSystemWrapper(MemoryFileSystem(), asynchronous=True)
    return MemoryZarrStore(fs=afs, path=path, read_only=read_only)


def _reopen(path: str, read_only: bool) -> MemoryZarrStore:
    return _open_memory(path, read_only)


class MemoryBackend(Backend):
    """A named namespace in this process's memory (``memory://name/prefix``)."""

    scheme = "memory"
    process_local = True

    def make_fs(self, asynchronous: bool) -> Any:
        from fsspec.implementations.memory import MemoryFileSystem

        return MemoryFileSystem()

    def fs_path(self, location: StoreLocation) -> str:
        return "/" + location.root

    def query_url(self, key: str) -> str:
        return "memory://" + self.fs_path(self.location.child(key))

    def zarr_store(self) -> Any:
        return _open_memory(self.fs_path(self.location))

    def kvstore_spec(self, location: StoreLocation) -> dict[str, Any]:
        raise InvalidInput(
            f"tensorstore cannot see {location.url}: memory:// stores live inside one Python "
            "process; use a local directory or s3:// store for tensorstore"
        )

    async def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        fs, path = self.fs, self.fs_path(self.location.child(key))
        with _CONDITIONAL_LOCK:
            if not fs.isfile(path):
                return None
            data = bytes(fs.cat_file(path))
        return data, content_token(data)

    async def stat(self, key: str) -> ObjectStat | None:
        fs, path = self.fs, self.fs_path(self.location.child(key))
        with _CONDITIONAL_LOCK:
            if not fs.isfile(path):
                return None
            data = bytes(fs.cat_file(path))
        return ObjectStat(len(data), content_token(data))

    async def put_conditional(
        self, key: str, data: bytes, version: str | None, write_id: str
    ) -> bool:
        fs, path = self.fs, self.fs_path(self.location.child(key))
        with _CONDITIONAL_LOCK:  # no await inside: other coroutines never run while it is held
            if version is None:
                if fs.exists(path):
                    return False
            elif not fs.isfile(path) or content_token(bytes(fs.cat_file(path))) != version:
                return False
            fs.pipe_file(path, data)
            return True
