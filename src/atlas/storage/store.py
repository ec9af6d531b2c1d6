"""The store handle: one object that names where bytes live and opens them for every library.

``Store`` gives the same location to zarr-python (a zarr v3 store), tensorstore (a kvstore
spec), fsspec (a filesystem + path) and to Atlas's own byte-level helpers. It pickles as its
:class:`StoreLocation` plus wrapper settings, so dask workers reopen it in their own process;
credentials are read from the environment variables the location names, in whichever process
opens the store, and are never written anywhere.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from atlas.errors import ConfigError, Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.storage.failures import translated
from atlas.storage.location import StoreLocation, Timeouts, parse_url
from atlas.storage.wrappers import (
    FaultConfig,
    FaultStore,
    LatencyConfig,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
)

if TYPE_CHECKING:
    import fsspec

_MEMORY_LOCK = threading.Lock()
_OPEN_S3: weakref.WeakSet[Store] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _register_exit_close() -> None:
    """Close S3 sessions at interpreter exit (registered on first use, not at import)."""
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(True)
        atexit.register(_close_all_s3)


def _close_all_s3() -> None:
    for store in list(_OPEN_S3):
        store.close()


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of :meth:`Store.probe`: a write/read/delete round trip and its latencies (ms)."""

    url: str
    ok: bool
    write_ms: float
    read_ms: float
    delete_ms: float
    list_ms: float


class Store:
    """A handle on one store location, for zarr, tensorstore, fsspec and raw bytes.

    Parameters
    ----------
    location:
        Where the bytes live (see :func:`atlas.storage.parse_url`).
    retry:
        Retry policy for transient failures; ``None`` disables retries.
    latency, faults:
        Optional injected latency / faults (tests and benchmarks).
    """

    def __init__(
        self,
        location: StoreLocation,
        *,
        retry: RetryPolicy | None = RetryPolicy(),
        latency: LatencyConfig | None = None,
        faults: FaultConfig | None = None,
    ) -> None:
        self.location = location
        self.retry = retry
        self.latency = latency
        self.faults = faults
        self._zarr: ZarrStore | None = None
        self._fs: Any = None
        self._afs: Any = None
        self._ts_context: Any = None

    # -- identity -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The canonical URL of the store root."""
        return self.location.url

    @property
    def site(self) -> str | None:
        """The site (data provider) this store belongs to, if known."""
        return self.location.site

    def __repr__(self) -> str:
        site = f" site={self.site!r}" if self.site else ""
        return f"Store({self.url!r}{site})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self.location.to_dict(), self.retry, self.latency, self.faults),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.location == self.location

    def __hash__(self) -> int:
        return hash(self.location)

    def child(self, path: str) -> Store:
        """A handle on ``path`` below this store's root (same options)."""
        return Store(
            self.location.child(path), retry=self.retry, latency=self.latency, faults=self.faults
        )

    # -- credentials ----------------------------------------------------------------------
    def _credentials(self) -> tuple[str, str] | None:
        loc = self.location
        if loc.anonymous:
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

    @contextmanager
    def aws_environment(self) -> Iterator[None]:
        """Temporarily expose this store's credentials as ``AWS_*`` variables (for tensorstore).

        tensorstore reads S3 credentials from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
        when a store is opened; sites may keep theirs under other names.
        """
        if self.location.scheme != "s3" or self.location.anonymous:
            yield
            return
        key, secret = self._credentials() or ("", "")
        wanted = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        saved = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def s3fs_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (credentials resolved from the env)."""
        loc = self.location
        t: Timeouts = loc.timeouts
        opts: dict[str, Any] = {
            "client_kwargs": {"region_name": loc.region},
            "config_kwargs": {
                "connect_timeout": t.connect,
                "read_timeout": t.read,
                "retries": {"max_attempts": t.client_attempts, "mode": "standard"},
            },
        }
        if loc.endpoint:
            opts["client_kwargs"]["endpoint_url"] = loc.endpoint
        creds = self._credentials()
        if creds is None:
            opts["anon"] = True
        else:
            opts["key"], opts["secret"] = creds
        return opts

    # -- fsspec ---------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """A synchronous fsspec filesystem for this store (use with :meth:`fs_path`)."""
        if self._fs is None:
            self._fs = self._make_fs(asynchronous=False)
        return self._fs

    def fs_path(self, key: str = "") -> str:
        """The path of ``key`` for :attr:`fs`."""
        loc = self.location.child(key) if key else self.location
        if loc.scheme == "memory":
            return "/" + loc.root
        return loc.root

    def _make_fs(self, asynchronous: bool) -> Any:
        scheme = self.location.scheme
        if scheme == "file":
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem(auto_mkdir=True)
        if scheme == "memory":
            from fsspec.implementations.memory import MemoryFileSystem

            return MemoryFileSystem()
        try:
            import s3fs
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("s3:// stores need s3fs: pip install 'atlas-imaging[s3]'") from exc
        fs = s3fs.S3FileSystem(asynchronous=asynchronous, **self.s3fs_options())
        fs.retries = max(1, self.location.timeouts.client_attempts)
        return fs

    # -- zarr -----------------------------------------------------------------------------
    def zarr_store(self) -> ZarrStore:
        """The zarr v3 store for this location, wrapped with translation/faults/latency/retry."""
        if self._zarr is None:
            store = self._wrap(self._base_zarr_store())
            # Pickling the zarr store (e.g. inside a zarr.Array sent to a dask worker) pickles
            # this handle instead of the S3 client, which would carry the secret key.
            store._atlas_handle = self  # type: ignore[attr-defined]
            self._zarr = store
        return self._zarr

    def _base_zarr_store(self) -> ZarrStore:
        loc = self.location
        if loc.scheme == "file":
            from zarr.storage import LocalStore

            return LocalStore(loc.root)
        if loc.scheme == "memory":
            from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

            with _MEMORY_LOCK:
                afs = AsyncFileSystemWrapper(self._make_fs(asynchronous=False), asynchronous=True)
            return FsspecStore(fs=afs, path=self.fs_path())
        return _S3Store(fs=self._async_fs(), path=loc.root)

    def _async_fs(self) -> Any:
        if self._afs is None:
            self._afs = self._make_fs(asynchronous=True)
            if self.location.scheme == "s3":
                _OPEN_S3.add(self)
                _register_exit_close()
        return self._afs

    def close(self) -> None:
        """Close this handle's network sessions (S3); the handle reopens them when used again."""
        afs, self._afs, self._zarr = self._afs, None, None
        s3 = getattr(afs, "_s3", None)
        if s3 is not None:
            with suppress(Exception):
                sync(s3.__aexit__(None, None, None))
        _OPEN_S3.discard(self)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wrap(self, base: ZarrStore) -> ZarrStore:
        store: ZarrStore = TranslatingStore(base, self.location)
        if self.faults is not None:
            store = FaultStore(store, self.faults)
        if self.latency is not None:
            store = LatencyStore(store, self.latency)
        if self.retry is not None:
            store = RetryStore(store, self.retry)
        return store

    # -- tensorstore ----------------------------------------------------------------------
    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """A tensorstore kvstore spec for ``path`` below the root (JSON-able).

        For S3, open it inside :meth:`aws_environment` (or with ``AWS_*`` set) so tensorstore
        finds the site's credentials.
        """
        loc = self.location.child(path) if path else self.location
        if loc.scheme == "file":
            return {"driver": "file", "path": loc.root.rstrip("/") + "/"}
        if loc.scheme == "memory":
            raise InvalidInput(
                f"tensorstore cannot see {loc.url}: memory:// stores live inside one Python "
                "process; use a local directory or s3:// store for tensorstore"
            )
        spec: dict[str, Any] = {
            "driver": "s3",
            "bucket": loc.bucket,
            "path": (loc.prefix.rstrip("/") + "/") if loc.prefix else "",
            "aws_region": loc.region,
            "aws_credentials": {"type": "anonymous" if loc.anonymous else "environment"},
        }
        if loc.endpoint:
            spec["endpoint"] = loc.endpoint
        return spec

    def tensorstore_context(self) -> Any:
        """This store's own tensorstore ``Context``.

        tensorstore caches S3 credentials per context; one context per store keeps two sites
        with different keys apart inside one process.
        """
        if self._ts_context is None:
            import tensorstore as ts

            self._ts_context = ts.Context()
        return self._ts_context

    def open_tensorstore(self, spec: dict[str, Any], **kwargs: Any) -> Any:
        """``tensorstore.open(spec)`` with this store's context and credentials.

        The credentials are read (and cached in the context) during the open, so the returned
        handle keeps working after the ``AWS_*`` variables are restored.
        """
        import tensorstore as ts

        with self.aws_environment():
            return ts.open(spec, context=self.tensorstore_context(), **kwargs).result()

    def open_kvstore(self, path: str = "") -> Any:
        """A tensorstore ``KvStore`` for ``path`` below the root, with credentials primed."""
        import tensorstore as ts

        with self.aws_environment():
            opened = ts.KvStore.open(self.kvstore_spec(path), context=self.tensorstore_context())
            kv = opened.result()
            kv.read(".atlas-credentials-probe").result()  # fetches and caches the credentials
        return kv

    # -- bytes ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key``; :class:`NotFound` if it does not exist."""
        buf = sync(self.zarr_store().get(key, default_buffer_prototype()))
        if buf is None:
            raise NotFound(f"no object {key!r} in {self.url}", site=self.site, location=self.url)
        return buf.to_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (replacing it)."""
        proto = default_buffer_prototype()
        sync(self.zarr_store().set(key, proto.buffer.from_bytes(data)))

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return bool(sync(self.zarr_store().exists(key)))

    def delete(self, key: str) -> None:
        """Delete the object at ``key`` (no error if it is absent)."""
        sync(self.zarr_store().delete(key))

    def list(self, prefix: str = "") -> builtins.list[str]:
        """All keys below ``prefix`` (recursive), sorted."""
        store = self.zarr_store()
        # Object stores with a filer (SeaweedFS) may list an emptied "directory" as an entry.
        folder = prefix.rstrip("/")

        async def collect() -> builtins.list[str]:
            return sorted([k async for k in store.list_prefix(prefix) if k != folder])

        return sync(collect())

    def delete_many(self, keys: builtins.list[str], concurrency: int = 32) -> None:
        """Delete ``keys`` concurrently (absent keys are ignored)."""
        store = self.zarr_store()

        async def remove() -> None:
            sem = asyncio.Semaphore(concurrency)

            async def one(k: str) -> None:
                async with sem:
                    await store.delete(k)

            await asyncio.gather(*(one(k) for k in keys))

        if keys:
            sync(remove())

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object below ``prefix``; returns how many were deleted."""
        if not prefix.strip("/"):
            raise InvalidInput("refusing to delete the whole store; give a non-empty prefix")
        keys = self.list(prefix.rstrip("/") + "/")
        self.delete_many(keys)
        if self.location.scheme == "file":
            prune_empty_dirs(os.path.join(self.location.root, prefix))
        return len(keys)

    # -- checks ---------------------------------------------------------------------------
    def ensure_reachable(self, *, create: bool = False) -> None:
        """Raise a clear error unless the store's root can be used.

        Local: the directory exists (or is created when ``create``) and is writable.
        S3: the bucket exists and the credentials are accepted (one ``HeadBucket``).
        """
        loc = self.location
        if loc.scheme == "file":
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
            return
        if loc.scheme == "memory":
            return
        fs = self._async_fs()

        async def head() -> None:
            await fs._call_s3("head_bucket", Bucket=loc.bucket)

        who = f"site {loc.site!r}: " if loc.site else ""
        attempt = 1
        while True:
            try:
                with translated(loc, op="open bucket of"):
                    try:
                        sync(head())
                    except FileNotFoundError as exc:
                        raise NotFound(
                            f"{who}bucket {loc.bucket!r} does not exist at {loc.endpoint or 'AWS'}",
                            site=loc.site,
                            location=loc.url,
                        ) from exc
                return
            except StoreUnavailable:
                if self.retry is None or attempt >= self.retry.attempts:
                    raise
                time.sleep(self.retry.delay(attempt))
                attempt += 1

    def probe(self) -> ProbeResult:
        """Write, read, list and delete one small object; returns latencies in milliseconds."""
        key = f".atlas-probe/{os.getpid()}-{time.time_ns()}"
        payload = os.urandom(64)
        t0 = time.perf_counter()
        self.write_bytes(key, payload)
        t1 = time.perf_counter()
        back = self.read_bytes(key)
        t2 = time.perf_counter()
        self.list(".atlas-probe/")
        t3 = time.perf_counter()
        self.delete(key)
        t4 = time.perf_counter()
        ok = back == payload and not self.exists(key)
        ms = 1000.0
        return ProbeResult(
            self.url, ok, (t1 - t0) * ms, (t2 - t1) * ms, (t4 - t3) * ms, (t3 - t2) * ms
        )


class _S3Store(FsspecStore):
    """zarr's FsspecStore, but a refused delete raises instead of passing silently.

    ``FsspecStore.delete`` uses s3fs's bulk ``_rm``, which ignores per-key errors in the
    DeleteObjects response: a key without delete permission would look deleted. Erasure cannot
    live with that, so single deletes go through ``DeleteObject``.
    """

    async def delete(self, key: str) -> None:
        self._check_writable()
        path = f"{self.path.rstrip('/')}/{key}" if key else self.path
        with suppress(FileNotFoundError):
            await self.fs._rm_file(path)


def prune_empty_dirs(path: str) -> None:
    """Remove empty directories below and including ``path`` (local stores only)."""
    if not os.path.isdir(path):
        return
    for dirpath, _dirnames, _files in os.walk(path, topdown=False):
        with suppress(OSError):
            os.rmdir(dirpath)


def _rebuild(
    location: Mapping[str, Any],
    retry: RetryPolicy | None,
    latency: LatencyConfig | None,
    faults: FaultConfig | None,
) -> Store:
    return Store(
        StoreLocation.from_dict(dict(location)), retry=retry, latency=latency, faults=faults
    )


def _zarr_store_of(handle: Store, read_only: bool = False) -> ZarrStore:
    store = handle.zarr_store()
    return store.with_read_only(True) if read_only else store


def open_store(
    url: str | os.PathLike[str] | Store,
    *,
    retry: RetryPolicy | None = RetryPolicy(),
    latency: LatencyConfig | None = None,
    faults: FaultConfig | None = None,
    **location_options: Any,
) -> Store:
    """Open a store by URL (``./dir``, ``memory://name``, ``s3://bucket/prefix?endpoint=...``).

    Extra keyword arguments (``endpoint``, ``region``, ``key_env``, ``secret_env``,
    ``anonymous``, ``site``, ``timeouts``) go to :func:`atlas.storage.parse_url`.
    """
    if isinstance(url, Store):
        return url
    return Store(parse_url(url, **location_options), retry=retry, latency=latency, faults=faults)
