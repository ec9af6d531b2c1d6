"""The store handle: one object that names where bytes live and opens them for every library.

``Store`` gives the same location to zarr-python (a zarr v3 store), tensorstore (a kvstore
spec), fsspec (a filesystem + path) and to Atlas's own byte-level helpers. It pickles as its
:class:`StoreLocation` plus wrapper settings, so dask workers reopen it in their own process;
credentials are read from the environment variables the location names, in whichever process
opens the store, and are never written anywhere.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import functools
import hashlib
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from atlas.errors import ConfigError, Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.storage.failures import translated
from atlas.storage.location import StoreLocation, Timeouts, _clean_key_path, parse_url
from atlas.storage.s3session import close_fs, make_s3fs
from atlas.storage.timeouts import (
    Deadline,
    configure_tensorstore_http,
    s3_config_kwargs,
    tensorstore_context_spec,
    ts_result,
)
from atlas.storage.wrappers import (
    FaultConfig,
    FaultStore,
    LatencyConfig,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
    _HookedStore,
)

if TYPE_CHECKING:
    import fsspec

T = TypeVar("T")

_MEMORY_LOCK = threading.Lock()
#: serialises conditional writes to memory:// stores (one process holds all of them)
_CONDITIONAL_LOCK = threading.Lock()


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
            "config_kwargs": s3_config_kwargs(t),
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
            return make_s3fs(self.s3fs_options(), self.location.timeouts, asynchronous=asynchronous)
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("s3:// stores need s3fs: pip install 'atlas-imaging[s3]'") from exc

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
        return self._afs

    def close(self) -> None:
        """Close this handle's network sessions (S3); the handle reopens them when used again.

        Handles on the same location with the same options share one session (s3fs caches
        its filesystems); closing it makes the others reconnect on their next request.
        Sessions still open at exit are closed then (also in worker processes).
        """
        if self.location.scheme == "s3":
            for fs in (self._afs, self._fs):
                if fs is not None:
                    close_fs(fs)
        self._afs, self._fs, self._zarr = None, None, None

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
            store = RetryStore(store, self.retry, location=self.location)
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

            if self.location.scheme == "s3":
                configure_tensorstore_http(self.location.timeouts)
                self._ts_context = ts.Context(tensorstore_context_spec(self.location.timeouts))
            else:
                self._ts_context = ts.Context()
        return self._ts_context

    def open_tensorstore(self, spec: dict[str, Any], **kwargs: Any) -> Any:
        """``tensorstore.open(spec)`` with this store's context and credentials.

        The credentials are read (and cached in the context) during the open, so the returned
        handle keeps working after the ``AWS_*`` variables are restored.
        """
        import tensorstore as ts

        with self.aws_environment():
            opened = ts.open(spec, context=self.tensorstore_context(), **kwargs)
            return ts_result(opened, self.location, "open with tensorstore")

    def open_kvstore(self, path: str = "") -> Any:
        """A tensorstore ``KvStore`` for ``path`` below the root, with credentials primed."""
        import tensorstore as ts

        limit = Deadline(self.location.timeouts.deadline)  # one deadline for both steps
        with self.aws_environment():
            opened = ts.KvStore.open(self.kvstore_spec(path), context=self.tensorstore_context())
            kv = ts_result(opened, self.location, "open with tensorstore", limit)
            # fetches and caches the credentials
            ts_result(kv.read(".atlas-credentials-probe"), self.location, "read tensorstore", limit)
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

        Raises:
            InvalidInput: ``key`` is not a clean relative key (empty, leading/trailing ``/``,
                empty, ``.`` or ``..`` parts), ``data`` is not bytes, or a file is in the way
                of the key's directory.
            Forbidden: the credentials or permissions do not allow writing.
            NotFound: the bucket does not exist. (SeaweedFS creates a missing bucket on upload
                for admin identities unless started with ``-s3.autoCreateBucket=false``.)
            StoreUnavailable: the store is unreachable, answered 5xx or kept answering 409
                (after the handle's retry policy), or an injected fault
                (:class:`~atlas.errors.InjectedFault`) was not retried away.
        """
        key, payload = self._conditional_key(key), _as_bytes(data)
        loc = self.location
        if loc.scheme == "file":
            path = self._local_path(key)
            return self._hooked("set", key, lambda: asyncio.to_thread(_local_create, path, payload))
        if loc.scheme == "memory":
            return self._hooked("set", key, lambda: self._memory_put(key, payload, None))
        write_id = uuid.uuid4().hex  # one per call: the same across its retries
        return self._hooked("set", key, lambda: self._s3_put(key, payload, None, write_id))

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The bytes at ``key`` and an opaque version token for :meth:`put_if_match`.

        The token is the object's ETag on S3 and the SHA-256 (hex) of the bytes on local and
        ``memory://`` stores; bytes and token always belong to the same state of the object.
        Tokens are only meaningful to the store that issued them. A content token cannot tell
        apart two states with identical bytes (A → B → A), which is harmless for
        compare-and-swap: the swap replaces exactly the bytes the caller read.

        Raises:
            NotFound: there is no object at ``key`` (or no such bucket).
            InvalidInput, Forbidden, StoreUnavailable: as for :meth:`put_if_absent`.
        """
        key = self._conditional_key(key)
        loc = self.location
        if loc.scheme == "file":
            path = self._local_path(key)
            found = self._hooked("get", key, lambda: asyncio.to_thread(_local_read, path))
        elif loc.scheme == "memory":
            found = self._hooked("get", key, lambda: self._memory_read(key))
        else:
            found = self._hooked("get", key, lambda: self._s3_read(key))
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

        Raises:
            InvalidInput: a bad ``key`` or a ``version`` that is not a string or ``None``.
            Forbidden, NotFound, StoreUnavailable: as for :meth:`put_if_absent`;
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
        key, payload = self._conditional_key(key), _as_bytes(data)
        loc = self.location
        if loc.scheme == "file":
            path = self._local_path(key)
            return self._hooked(
                "set", key, lambda: asyncio.to_thread(_local_swap, path, payload, version)
            )
        if loc.scheme == "memory":
            return self._hooked("set", key, lambda: self._memory_put(key, payload, version))
        write_id = uuid.uuid4().hex
        return self._hooked("set", key, lambda: self._s3_put(key, payload, version, write_id))

    def _conditional_key(self, key: str) -> str:
        """``key`` if it is a clean relative key, else :class:`InvalidInput`."""
        if not isinstance(key, str) or not key:
            raise InvalidInput(
                f"store keys are non-empty strings, got {key!r}", site=self.site, location=self.url
            )
        try:
            clean: str | None = _clean_key_path(key)
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

    def _local_path(self, key: str) -> str:
        return os.path.join(self.location.root, *key.split("/"))

    def _hooked(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` through this handle's wrapper stack (translation, faults, latency, retry).

        Each layer's hook wraps the next, exactly as for a zarr ``get``/``set`` of ``key``, so
        conditional writes see the same retry policy, injected faults and error translation.
        """
        layers: builtins.list[_HookedStore] = []
        store: Any = self.zarr_store()
        while isinstance(store, _HookedStore):
            layers.append(store)
            store = store._store
        call: Callable[[], Awaitable[T]] = fn
        for layer in reversed(layers):
            call = functools.partial(layer._call, op, key, call)

        async def run() -> T:
            return await call()

        return sync(run())

    # memory:// --------------------------------------------------------------------------
    async def _memory_read(self, key: str) -> tuple[bytes, str] | None:
        fs, path = self.fs, self.fs_path(key)
        with _CONDITIONAL_LOCK:
            if not fs.isfile(path):
                return None
            data = bytes(fs.cat_file(path))
        return data, _content_token(data)

    async def _memory_put(self, key: str, data: bytes, version: str | None) -> bool:
        fs, path = self.fs, self.fs_path(key)
        with _CONDITIONAL_LOCK:  # no await inside: other coroutines never run while it is held
            if version is None:
                if fs.exists(path):
                    return False
            elif not fs.isfile(path) or _content_token(bytes(fs.cat_file(path))) != version:
                return False
            fs.pipe_file(path, data)
            return True

    # S3 ---------------------------------------------------------------------------------
    async def _s3_client(self) -> Any:
        fs = self._async_fs()
        await fs.set_session()
        return await fs.get_s3(self.location.bucket)

    async def _s3_read(self, key: str) -> tuple[bytes, str] | None:
        client = await self._s3_client()
        loc = self.location
        try:
            response = await client.get_object(Bucket=loc.bucket, Key=loc.child(key).prefix)
            async with response["Body"] as body:
                data = await body.read()
        except Exception as exc:
            code, status = _s3_error(exc)
            if code == "NoSuchKey":
                return None
            if status is not None and status >= 500:
                raise self._s3_unavailable(key, "get", f"HTTP {status} {code}") from exc
            raise
        return bytes(data), str(response["ETag"])

    async def _s3_put(self, key: str, data: bytes, version: str | None, write_id: str) -> bool:
        client = await self._s3_client()
        loc = self.location
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        for conflict in range(1, _S3_CONFLICT_ATTEMPTS + 1):
            try:
                await client.put_object(
                    Bucket=loc.bucket,
                    Key=loc.child(key).prefix,
                    Body=data,
                    Metadata={_WRITE_ID_META: write_id},
                    **condition,
                )
                return True
            except Exception as exc:
                code, status = _s3_error(exc)
                if status == 412:
                    # A lost race, or this call's own write answered late: an earlier attempt
                    # whose answer was lost (and which aiohttp, botocore or the retry policy
                    # sent again) may have landed. The write id tells the two apart.
                    return await self._s3_written_by(key, write_id)
                if status == 409 and conflict < _S3_CONFLICT_ATTEMPTS:
                    await asyncio.sleep(random.uniform(0, 0.05 * 2**conflict))
                    continue
                if status is not None and (status == 409 or status >= 500):
                    raise self._s3_unavailable(key, "set", f"HTTP {status} {code}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _s3_written_by(self, key: str, write_id: str) -> bool:
        """Whether the object at ``key`` now is the one written with ``write_id``."""
        client = await self._s3_client()
        loc = self.location
        try:
            head = await client.head_object(Bucket=loc.bucket, Key=loc.child(key).prefix)
        except Exception as exc:
            status = _s3_error(exc)[1]
            if status == 404:
                return False
            if status == 403:  # HEAD errors carry no code, so translate() cannot tell
                who = f"site {self.site!r} " if self.site else ""
                raise Forbidden(
                    f"{who}refused to read back key {key!r} of {self.url} after a conditional "
                    "write found it taken; conditional writes need read permission too",
                    site=self.site,
                    location=self.url,
                ) from exc
            raise
        return bool(head.get("Metadata", {}).get(_WRITE_ID_META) == write_id)

    def _s3_unavailable(self, key: str, op: str, what: str) -> StoreUnavailable:
        who = f"site {self.site!r} " if self.site else ""
        return StoreUnavailable(
            f"{who}store {self.url} could not {op} key {key!r} ({what}); often transient, "
            "try again",
            site=self.site,
            location=self.url,
        )

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
        who = f"site {loc.site!r}: " if loc.site else ""

        async def head() -> None:
            with translated(loc, op="open bucket of"):
                try:
                    await fs._call_s3("head_bucket", Bucket=loc.bucket)
                except FileNotFoundError as exc:
                    raise NotFound(
                        f"{who}bucket {loc.bucket!r} does not exist at {loc.endpoint or 'AWS'}",
                        site=loc.site,
                        location=loc.url,
                    ) from exc

        # through the wrapper stack: error translation, faults, retries within the deadline
        self._hooked("exists", "", head)

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


# -- conditional writes: helpers ------------------------------------------------------------
_S3_CONFLICT_ATTEMPTS = 5
#: user metadata naming the call that wrote an object conditionally (x-amz-meta-atlas-write-id)
_WRITE_ID_META = "atlas-write-id"
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


def _as_bytes(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidInput(f"data must be bytes, got {type(data).__name__}")
    return bytes(data)


def _content_token(data: bytes) -> str:
    """The version token of local and memory:// objects: SHA-256 of the bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def _s3_error(exc: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status of a botocore ``ClientError`` (``None`` otherwise)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return response.get("Error", {}).get("Code"), int(status) if status else None


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
    return data, _content_token(data)


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
