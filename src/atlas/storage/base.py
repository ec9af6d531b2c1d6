"""The abstract backend: what one kind of store (one URL scheme) must provide.

:class:`~atlas.storage.Store` is the handle every caller uses; it holds one :class:`Backend`
for its location and asks it for everything that differs between kinds of store: the zarr
store, the fsspec filesystem, the tensorstore spec, the atomic step of a conditional write and
the checks of :meth:`~atlas.storage.Store.ensure_reachable`. Callers outside the storage layer
never test the URL scheme: they read the capability flags below (through the ``Store``
properties of the same names) or call a ``Store`` method that the backend implements.

A new backend subclasses :class:`Backend`, registers its scheme with
:func:`atlas.storage.register_backend` and passes the store suite in
:mod:`atlas.testing.store_tests` (``docs/storage.md``, "Adding a backend").
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from atlas.errors import ConfigError
from atlas.storage.location import StoreLocation

if TYPE_CHECKING:
    from zarr.abc.store import Store as ZarrStore

T = TypeVar("T")

#: runs an async step through a handle's wrapper stack: ``hooked(op, key, step)``
Hooked = Callable[[str, str, Callable[[], Awaitable[Any]]], Any]


@dataclass(frozen=True)
class ObjectStat:
    """Size and version of one stored object, without its bytes.

    ``version`` changes whenever the object's bytes do (S3: its ETag; local: inode, size and
    modification time in ns; ``memory://``: SHA-256 of the bytes). It is an HTTP validator, not
    a token for :meth:`~atlas.storage.Store.put_if_match`.
    """

    size: int
    version: str


class Backend(ABC):
    """One kind of store, bound to one :class:`~atlas.storage.StoreLocation`.

    Parameters
    ----------
    location:
        Where the bytes live; its ``scheme`` is the one the backend is registered for.

    Notes
    -----
    The class attributes are capability flags; callers read them instead of the scheme.
    """

    #: the URL scheme this backend serves (``file``, ``memory``, ``s3``)
    scheme: ClassVar[str]
    #: requests cross a network: deadlines and client timeouts apply, and writers keep a
    #: second shard slab in flight to hide the latency
    is_remote: ClassVar[bool] = False
    #: every key is a file below ``location.root`` on this machine (empty folders can be
    #: pruned, scratch space can live inside the store, DuckDB reads the paths directly)
    has_local_root: ClassVar[bool] = False
    #: the bytes live inside this Python process: other processes (workers, a scheduler)
    #: cannot see them and they end with it
    process_local: ClassVar[bool] = False
    #: :meth:`put_conditional` is atomic for every writer that can reach the store
    supports_conditional_writes: ClassVar[bool] = True
    #: credentials are read from the environment variables the location names
    uses_credentials: ClassVar[bool] = False

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self._fs: Any = None

    # -- what a backend must provide -------------------------------------------------------
    @abstractmethod
    def make_fs(self, asynchronous: bool) -> Any:
        """A new fsspec filesystem for this store (sync or async)."""

    @abstractmethod
    def zarr_store(self) -> ZarrStore:
        """The bare zarr v3 store of the location (the handle wraps it); it must pickle."""

    @abstractmethod
    def kvstore_spec(self, location: StoreLocation) -> dict[str, Any]:
        """A JSON-able tensorstore kvstore spec for ``location`` (this store or below it)."""

    @abstractmethod
    async def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes at ``key`` and their version token, or ``None`` if absent."""

    @abstractmethod
    async def put_conditional(
        self, key: str, data: bytes, version: str | None, write_id: str
    ) -> bool:
        """Write ``data`` at ``key`` if it is absent (``version=None``) or at ``version``.

        ``write_id`` is the same for every attempt of one call (retries included), so a
        backend can tell its own earlier, answered-late write from another writer's.
        """

    @abstractmethod
    async def stat(self, key: str) -> ObjectStat | None:
        """Size and version of the object at ``key`` (its bytes unread), ``None`` if absent."""

    # -- with defaults ---------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The backend's synchronous fsspec filesystem (made on first use)."""
        if self._fs is None:
            self._fs = self.make_fs(asynchronous=False)
        return self._fs

    def fs_path(self, location: StoreLocation) -> str:
        """The path of ``location`` on :attr:`fs`."""
        return location.root

    def query_url(self, key: str) -> str:
        """How DuckDB names ``key`` (with :attr:`fs` registered when not :attr:`has_local_root`)."""
        return self.fs_path(self.location.child(key))

    def tensorstore_context_spec(self) -> dict[str, Any]:
        """Resources of this store's own tensorstore ``Context``."""
        return {}

    def ensure_reachable(self, create: bool, hooked: Hooked) -> None:
        """Raise a clear error unless the root can be used (``hooked`` runs remote checks)."""
        return None

    def prune_empty_dirs(self, prefix: str) -> None:
        """Remove empty folders left below ``prefix`` (only stores with folders have any)."""
        return None

    def stored_size(self, prefix: str) -> int:
        """Bytes stored below ``prefix``."""
        path = self.fs_path(self.location.child(prefix))
        return int(sum(self.fs.du(path, total=False).values()))

    def close(self) -> None:
        """Release network sessions and private files; the backend reopens them when used."""
        self._fs = None

    @classmethod
    def permission_hint(cls, location: StoreLocation) -> str:
        """What to check when the store refuses access."""
        return "check the directory's permissions"

    # -- shared helpers --------------------------------------------------------------------
    def credentials(self) -> tuple[str, str] | None:
        """The key and secret from the variables the location names (``None``: anonymous)."""
        loc = self.location
        if loc.anonymous or not self.uses_credentials:
            return None
        key, secret = os.environ.get(loc.key_env), os.environ.get(loc.secret_env)
        if not key or not secret:
            who = f"site {loc.site!r}: " if loc.site else ""
            missing = [n for n, v in ((loc.key_env, key), (loc.secret_env, secret)) if not v]
            raise ConfigError(
                f"{who}credentials for {loc.url} are expected in the environment variable(s) "
                f"{', '.join(missing)}, which are not set",
                site=loc.site,
                location=loc.url,
            )
        return key, secret
