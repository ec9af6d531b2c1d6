"""The store handle: one object that names where bytes live and opens them for every library.

``Store`` gives the same location to zarr-python (a zarr v3 store), tensorstore (a kvstore
spec), fsspec (a filesystem + path) and to Atlas's own byte-level helpers. What differs
between kinds of store lives in one backend per URL scheme (:mod:`atlas.storage.backends`,
found through :mod:`atlas.storage.registry`); the handle adds the wrapper stack (error
translation, faults, latency, retries) and the checks common to all. It pickles as its
:class:`StoreLocation` plus wrapper settings, so dask workers reopen it in their own process;
credentials are read from the environment variables the location names, in whichever process
opens the store, and are never written anywhere but a handle's private tensorstore file.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlas.errors import InvalidInput, NotFound
from atlas.storage.base import Backend, ObjectStat
from atlas.storage.location import StoreLocation, clean_key_path, parse_url
from atlas.storage.registry import backend_class
from atlas.storage.timeouts import Deadline, ts_result
from atlas.storage.wrappers import (
    FaultConfig,
    FaultStore,
    HookedStore,
    LatencyConfig,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
)

if TYPE_CHECKING:
    import fsspec

T = TypeVar("T")


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
        #: what differs between kinds of store (one backend per URL scheme)
        self.backend: Backend = backend_class(location.scheme)(location)
        self._zarr: HookedStore | None = None
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

    # -- capabilities (see atlas.storage.base.Backend) ------------------------------------
    @property
    def is_remote(self) -> bool:
        """Requests cross a network (deadlines apply; writers keep more requests in flight)."""
        return self.backend.is_remote

    @property
    def has_local_root(self) -> bool:
        """Every key is a file below ``location.root`` on this machine."""
        return self.backend.has_local_root

    @property
    def process_local(self) -> bool:
        """The bytes live in this Python process only (no workers; they end with it)."""
        return self.backend.process_local

    @property
    def supports_conditional_writes(self) -> bool:
        """:meth:`put_if_absent` and :meth:`put_if_match` are atomic for every writer."""
        return self.backend.supports_conditional_writes

    @property
    def uses_credentials(self) -> bool:
        """Credentials come from the environment variables the location names."""
        return self.backend.uses_credentials

    # -- fsspec ---------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """A synchronous fsspec filesystem for this store (use with :meth:`fs_path`)."""
        return self.backend.fs

    def fs_path(self, key: str = "") -> str:
        """The path of ``key`` for :attr:`fs`."""
        return self.backend.fs_path(self.location.child(key) if key else self.location)

    def query_url(self, key: str) -> str:
        """How DuckDB names ``key`` (register :attr:`fs` unless :attr:`has_local_root`)."""
        return self.backend.query_url(key)

    def stored_size(self, prefix: str) -> int:
        """Bytes stored below ``prefix``."""
        return self.backend.stored_size(prefix)

    def prune_empty_dirs(self, prefix: str) -> None:
        """Remove empty folders left below (and at) ``prefix``; nothing to do without folders."""
        self.backend.prune_empty_dirs(prefix)

    # -- zarr -----------------------------------------------------------------------------
    def zarr_store(self) -> ZarrStore:
        """The zarr v3 store for this location, wrapped with translation/faults/latency/retry.

        It pickles with its settings; the bare store at the bottom pickles as its location,
        so a zarr array sent to a worker process never carries credentials.
        """
        return self._stack()

    def _stack(self) -> HookedStore:
        if self._zarr is None:
            store: HookedStore = TranslatingStore(self.backend.zarr_store(), self.location)
            if self.faults is not None:
                store = FaultStore(store, self.faults)
            if self.latency is not None:
                store = LatencyStore(store, self.latency)
            if self.retry is not None:
                store = RetryStore(store, self.retry, location=self.location)
            self._zarr = store
        return self._zarr

    def close(self) -> None:
        """Close this handle's network sessions and private files; they reopen when used again.

        Handles on the same location with the same options share one session (s3fs caches
        its filesystems); closing it makes the others reconnect on their next request.
        Sessions still open at exit are closed then (also in worker processes).
        """
        self.backend.close()
        self._zarr, self._ts_context = None, None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tensorstore ----------------------------------------------------------------------
    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """A tensorstore kvstore spec for ``path`` below the root (JSON-able).

        On S3 it names this handle's private credentials file (``aws_credentials`` of type
        ``profile``), valid until the handle is closed; open it with
        :meth:`tensorstore_context` (or :meth:`open_tensorstore`).
        """
        return self.backend.kvstore_spec(self.location.child(path) if path else self.location)

    def tensorstore_context(
        self, parent: Any = None, resources: Mapping[str, Any] | None = None
    ) -> Any:
        """The store's own tensorstore ``Context``.

        tensorstore caches S3 credentials per context; one context per store keeps two sites
        with different keys apart inside one process.

        Parameters
        ----------
        parent
            A ``tensorstore.Context`` to inherit every resource the store does not set (e.g.
            one ``cache_pool`` shared by all stores of a process). With a parent, or with
            ``resources``, a new context is made on each call (the caller keeps it); without,
            the store's one cached context is returned.
        resources
            Further context resources (e.g. ``{"s3_request_concurrency": {"limit": 64}}``);
            the store's own settings (its retry bounds) win over them.
        """
        if parent is not None or resources:
            import tensorstore as ts

            spec = {**dict(resources or {}), **self.backend.tensorstore_context_spec()}
            return ts.Context(spec, parent) if parent is not None else ts.Context(spec)
        if self._ts_context is None:
            import tensorstore as ts

            self._ts_context = ts.Context(self.backend.tensorstore_context_spec())
        return self._ts_context

    def open_tensorstore(self, spec: dict[str, Any], *, context: Any = None, **kwargs: Any) -> Any:
        """``tensorstore.open(spec)`` within the store's deadline.

        ``context`` defaults to the store's own (:meth:`tensorstore_context`); pass one made
        by ``tensorstore_context(parent=...)`` to share a cache across stores.
        """
        import tensorstore as ts

        ctx = context if context is not None else self.tensorstore_context()
        opened = ts.open(spec, context=ctx, **kwargs)
        return ts_result(opened, self.location, "open with tensorstore")

    def open_kvstore(self, path: str = "", *, context: Any = None) -> Any:
        """A tensorstore ``KvStore`` for ``path`` below the root, with credentials primed.

        ``context`` as for :meth:`open_tensorstore`.
        """
        import tensorstore as ts

        limit = Deadline(self.location.timeouts.deadline)  # one deadline for both steps
        ctx = context if context is not None else self.tensorstore_context()
        opened = ts.KvStore.open(self.kvstore_spec(path), context=ctx)
        kv = ts_result(opened, self.location, "open with tensorstore", limit)
        # fetches and caches the credentials in the context
        ts_result(kv.read(".atlas-credentials-probe"), self.location, "read tensorstore", limit)
        return kv

    # -- bytes ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        """The whole object at ``key``; :class:`NotFound` if it does not exist."""
        buf = sync(self.zarr_store().get(key, default_buffer_prototype()))
        if buf is None:
            raise NotFound(f"no object {key!r} in {self.url}", site=self.site, location=self.url)
        return buf.to_bytes()

    def stat(self, key: str) -> ObjectStat:
        """Size and version of the object at ``key``, without reading it (``NotFound`` if absent).

        ``InvalidInput`` for a key that is not clean (as :meth:`read_versioned`).
        """
        key = self._conditional_key(key)
        found = self._hooked("exists", key, lambda: self.backend.stat(key))
        if found is None:
            raise NotFound(f"no object {key!r} in {self.url}", site=self.site, location=self.url)
        return found

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of the object at ``key``, reading only those from the store.

        Fewer bytes come back when the object is shorter; ``NotFound`` if it is absent.
        """
        from zarr.abc.store import RangeByteRequest

        key = self._conditional_key(key)
        if not 0 <= start <= stop:
            raise InvalidInput(f"byte range {start}:{stop} is not 0 <= start <= stop")
        request = RangeByteRequest(start, stop)
        buf = sync(self.zarr_store().get(key, default_buffer_prototype(), request))
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
        self.prune_empty_dirs(prefix)
        return len(keys)

    # -- conditional writes -------------------------------------------------------------------
    # Atomic create-if-absent and compare-and-swap, for publishing index versions and for locks.
    # They run through this handle's wrapper stack (retries, injected latency and faults, error
    # translation), with the conditional step itself done by the backend: os.link / an O_EXCL
    # lock file + os.replace on local disk, a process-wide lock for memory://, and S3's
    # If-None-Match / If-Match preconditions on PutObject.

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` holding ``data`` unless it exists; ``True`` if this call created it.

        Of many concurrent writers (threads, processes or hosts) exactly one gets ``True`` and
        its bytes are what the key then holds; every other gets ``False`` and nothing changes.
        Readers never see a partial object.

        - local: the bytes go to a temporary file in the key's directory, which is then
          hard-linked to the key (``os.link`` fails if the key exists). On a filesystem without
          hard links the key's lock file (see :meth:`put_if_match`) and ``os.replace`` are used.
        - ``memory://``: a process-wide lock around the check and the write.
        - S3: ``PutObject`` with ``If-None-Match: *``; HTTP 412 means the key exists. Each
          call tags its object with a unique ``x-amz-meta-atlas-write-id``: when an answer is
          lost and the request is sent again (aiohttp resends a ``PUT`` on a dropped
          keep-alive connection by itself; botocore and the retry policy also retry), the
          resent request gets 412 from the call's own write, and one ``HeadObject`` on 412
          tells "my earlier attempt landed" (``True``) from "another writer won" (``False``).
          409 (a concurrent conditional write in progress) is retried a few times, then
          raises :class:`StoreUnavailable`, as do 5xx answers.

        Faults and latency configured on this handle apply as to a zarr ``set`` of ``key``;
        :class:`StoreUnavailable` (including injected faults) is retried per the handle's
        :class:`RetryPolicy`. Injected faults fire before the request, so they never leave
        the outcome in doubt.

        Raises
        ------
        InvalidInput
            ``key`` is not a clean relative key (empty, leading/trailing ``/``,
            empty, ``.`` or ``..`` parts), ``data`` is not bytes, or a file is in the way
            of the key's directory.
        Forbidden
            the credentials or permissions do not allow writing.
        NotFound
            the bucket does not exist. (SeaweedFS creates a missing bucket on upload
            for admin identities unless started with ``-s3.autoCreateBucket=false``.)
        StoreUnavailable
            the store is unreachable, answered 5xx or kept answering 409
            (after the handle's retry policy), or an injected fault
            (:class:`~atlas.errors.InjectedFault`) was not retried away.
        """
        return self._put(key, data, None)

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes at ``key`` and an opaque version token for :meth:`put_if_match`.

        The token is the object's ETag on S3 and the SHA-256 (hex) of the bytes on local and
        ``memory://`` stores; bytes and token always belong to the same state of the object.
        Tokens are only meaningful to the store that issued them. A content token cannot tell
        apart two states with identical bytes (A → B → A), which is harmless for
        compare-and-swap: the swap replaces exactly the bytes the caller read.

        Raises
        ------
        NotFound
            there is no object at ``key`` (or no such bucket).
        InvalidInput, Forbidden, StoreUnavailable
            as for :meth:`put_if_absent`.
        """
        key = self._conditional_key(key)
        found = self._hooked("get", key, lambda: self.backend.read_versioned(key))
        if found is None:
            raise NotFound(f"no object {key!r} in {self.url}", site=self.site, location=self.url)
        return found

    def put_if_match(self, key: str, data: bytes, version: str | None) -> bool:
        """Replace ``key`` with ``data`` only if it is still at ``version`` (compare-and-swap).

        ``version`` is a token from :meth:`read_versioned`; ``None`` means "only if absent"
        (exactly :meth:`put_if_absent`). Returns ``False``, changing nothing, when the object
        is at another version or absent. The usual loop is read → compute → ``put_if_match``,
        repeated on ``False``; concurrent loops then lose no update.

        - local: an ``O_EXCL`` lock file ``<key>.atlas-lock`` serialises swappers (a lock older
          than :data:`LOCK_STALE_AFTER_S` = 30 s is taken to be left by a crashed process and
          broken; waiting longer than :data:`LOCK_WAIT_S` raises); under it the current
          bytes are re-read and compared, and the new bytes are written to a temporary file
          and moved over the key with ``os.replace`` (atomic: readers see old or new bytes).
          Unconditional writes and deletes do not take the lock.
        - ``memory://``: a process-wide lock around compare and write.
        - S3: ``PutObject`` with ``If-Match: <etag>``; 412 → ``False``. Lost answers, 409 and
          5xx are handled as in :meth:`put_if_absent`. One case stays ambiguous: if this
          call's answer is lost, *and* another writer swaps the object before the resent
          request arrives, the call returns ``False`` although its write was applied (and
          then superseded by a writer that read it).

        Raises
        ------
        InvalidInput
            a bad ``key`` or a ``version`` that is not a string or ``None``.
        Forbidden, NotFound, StoreUnavailable
            as for :meth:`put_if_absent`;
            :class:`StoreUnavailable` also when a local lock stays busy for a minute.
            (SeaweedFS checks ``If-Match`` before the bucket, so a missing bucket gives
            ``False`` there; AWS answers ``NoSuchBucket`` → :class:`NotFound`.)
        """
        if version is None:
            return self.put_if_absent(key, data)
        if not isinstance(version, str) or not version:
            raise InvalidInput(
                f"version must be a token from read_versioned() or None, got {version!r}",
                site=self.site,
                location=self.url,
            )
        return self._put(key, data, version)

    def _put(self, key: str, data: bytes, version: str | None) -> bool:
        key, payload = self._conditional_key(key), _as_bytes(data)
        write_id = uuid.uuid4().hex  # one per call: the same across its retries
        return self._hooked(
            "set", key, lambda: self.backend.put_conditional(key, payload, version, write_id)
        )

    def _conditional_key(self, key: str) -> str:
        """``key`` if it is a clean relative key, else :class:`InvalidInput`."""
        if not isinstance(key, str) or not key:
            raise InvalidInput(
                f"store keys are non-empty strings, got {key!r}", site=self.site, location=self.url
            )
        try:
            clean: str | None = clean_key_path(key)
        except InvalidInput:  # '..' parts
            clean = None
        if clean != key:
            raise InvalidInput(
                f"store key {key!r} is not a clean relative key: no leading or trailing '/', "
                "no empty, '.' or '..' parts",
                site=self.site,
                location=self.url,
            )
        return key

    def _hooked(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` through this handle's wrapper stack (translation, faults, latency, retry).

        Each wrapper's hook wraps the next, exactly as for a zarr ``get``/``set`` of ``key``,
        so conditional writes see the same retry policy, injected faults and error translation.
        """
        return sync(self._stack().call(op, key, fn))

    # -- checks ---------------------------------------------------------------------------
    def ensure_reachable(self, *, create: bool = False) -> None:
        """Raise a clear error unless the store's root can be used.

        Local: the directory exists (or is created when ``create``) and is writable.
        S3: the bucket exists and the credentials are accepted (one ``HeadBucket``).
        """
        self.backend.ensure_reachable(create, self._hooked)

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


def _as_bytes(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"data must be bytes, got {type(data).__name__}")
    return bytes(data)


def _rebuild(
    location: Mapping[str, Any],
    retry: RetryPolicy | None,
    latency: LatencyConfig | None,
    faults: FaultConfig | None,
) -> Store:
    return Store(
        StoreLocation.from_dict(dict(location)), retry=retry, latency=latency, faults=faults
    )


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
