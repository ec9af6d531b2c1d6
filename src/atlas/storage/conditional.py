"""Atomic conditional writes on every store kind: create-if-absent and compare-and-swap.

- S3: ``PutObject`` with ``If-None-Match: *`` (create-if-absent) or ``If-Match: <etag>``
  (compare-and-swap); HTTP 412 means someone else won.
- local directory: create-if-absent is a temp file + ``os.link`` (fails if the name exists);
  compare-and-swap takes a short ``O_EXCL`` lock file, re-checks, and ``os.replace``-s.
- memory: a process-wide lock.

Version tokens are opaque strings: the ETag on S3, a SHA-256 of the content elsewhere (replacing
content by identical content is harmless, so content hashes are safe tokens).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from typing import Any

from zarr.core.sync import sync

from atlas.errors import NotFound
from atlas.storage.failures import translated
from atlas.storage.store import Store

_MEMORY_LOCK = threading.Lock()
_STALE_LOCK_SECONDS = 30.0


def _local_path(store: Store, key: str) -> str:
    return os.path.join(store.location.root, *key.split("/"))


def _s3_call(store: Store, method: str, **kwargs: Any) -> Any:
    fs = store._async_fs()

    async def call() -> Any:
        return await fs._call_s3(method, **kwargs)

    return sync(call())


def _precondition_failed(exc: BaseException) -> bool:
    cur: BaseException | None = exc
    while cur is not None:
        text = str(cur)
        if "PreconditionFailed" in text or "412" in text or "ConditionalRequestConflict" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _s3_key(store: Store, key: str) -> tuple[str, str]:
    loc = store.location.child(key)
    return loc.bucket, loc.prefix


def put_if_absent(store: Store, key: str, data: bytes) -> bool:
    """Create ``key`` with ``data`` unless it exists; True if this call created it."""
    scheme = store.location.scheme
    if scheme == "file":
        path = _local_path(store, key)
        with translated(store.location, key, "create"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    if scheme == "memory":
        with _MEMORY_LOCK:
            if store.exists(key):
                return False
            store.write_bytes(key, data)
            return True
    bucket, name = _s3_key(store, key)
    for attempt in range(5):
        try:
            with translated(store.location, key, "create"):
                try:
                    _s3_call(store, "put_object", Bucket=bucket, Key=name, Body=data,
                             IfNoneMatch="*")  # fmt: skip
                except Exception as exc:
                    if _precondition_failed(exc):
                        if "ConditionalRequestConflict" in str(exc) and attempt < 4:
                            time.sleep(0.05 * (attempt + 1))
                            raise _Retry from exc
                        return False
                    raise
            return True
        except _Retry:
            continue
    return False


class _Retry(Exception):
    pass


def read_versioned(store: Store, key: str) -> tuple[bytes, str]:
    """``(bytes, version token)`` of ``key``; :class:`NotFound` if absent."""
    if store.location.scheme in ("file", "memory"):
        data = store.read_bytes(key)
        return data, hashlib.sha256(data).hexdigest()
    bucket, name = _s3_key(store, key)
    with translated(store.location, key, "read"):
        try:
            response = _s3_call(store, "get_object", Bucket=bucket, Key=name)
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key!r} in {store.url}", site=store.site) from exc

        async def body() -> bytes:
            async with response["Body"] as stream:
                return bytes(await stream.read())

        data = sync(body())
    return data, str(response["ETag"])


def _current_token(store: Store, key: str) -> str | None:
    try:
        return read_versioned(store, key)[1]
    except NotFound:
        return None


def put_if_match(store: Store, key: str, data: bytes, version: str | None) -> bool:
    """Write ``key`` only if its version token is still ``version`` (``None``: absent)."""
    if version is None:
        return put_if_absent(store, key, data)
    scheme = store.location.scheme
    if scheme == "memory":
        with _MEMORY_LOCK:
            if _current_token(store, key) != version:
                return False
            store.write_bytes(key, data)
            return True
    if scheme == "file":
        path = _local_path(store, key)
        lock = path + ".lock"
        with translated(store.location, key, "swap"):
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    os.close(fd)
                    break
                except FileExistsError:
                    with contextlib.suppress(FileNotFoundError):
                        if time.time() - os.path.getmtime(lock) > _STALE_LOCK_SECONDS:
                            os.unlink(lock)  # a crashed holder
                            continue
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.005)
            try:
                if _current_token(store, key) != version:
                    return False
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
    bucket, name = _s3_key(store, key)
    with translated(store.location, key, "swap"):
        try:
            _s3_call(store, "put_object", Bucket=bucket, Key=name, Body=data, IfMatch=version)
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise
    return True
