"""S3 sessions of s3fs/aiobotocore: every request time-bounded, every session closed.

s3fs keeps one aiohttp session per filesystem object and closes it only on request; a process
that ends with one open prints "Unclosed client session" (and, in worker processes, nothing
closes it at all). Atlas tracks every S3 filesystem it opens and closes them:

- when a :class:`~atlas.storage.Store` is closed (``store.close()`` or ``with store:``);
- at interpreter exit (``atexit``), and at the exit of ``multiprocessing`` children (dask or
  process-pool workers skip ``atexit``), registered on first use, not at import.

Each S3 request also has a deadline (:attr:`~atlas.storage.Timeouts.deadline`) covering the
client's own retries, so DuckDB's reads through fsspec are bounded like zarr's.

Every filesystem gets its own aiobotocore session (credentials are never shared), but all
sessions of a process share one botocore data loader: the S3 service model is parsed once per
process instead of once per filesystem (about 0.15 s of JSON each time: a dataset worker or a
test that opens many stores paid it again and again; decision 0051).
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing.util
import os
import threading
from contextlib import suppress
from typing import Any

from atlas.storage.timeouts import Timeouts, s3_config_kwargs

_LOCK = threading.Lock()
#: id(fs) -> fs, for every S3 filesystem with a session that may be open
_OPEN: dict[int, Any] = {}
#: the pid whose exit hooks are registered (a forked child registers its own)
_HOOKED_PID: list[int] = []
_CLASS: list[type] = []
#: the process's botocore data loader (service models, parsed once), made on first use
_LOADER: list[Any] = []


def aio_session(**kwargs: Any) -> Any:
    """A new aiobotocore session (``kwargs`` as s3fs's) on the process's shared data loader.

    The session holds no credentials (s3fs passes them to each client it makes); only the parsed
    service models are shared, which is how botocore shares them between a session's clients.
    """
    from aiobotocore.session import AioSession
    from botocore.loaders import create_loader

    session = AioSession(**kwargs)
    with _LOCK:
        if not _LOADER:
            _LOADER.append(create_loader(session.get_config_variable("data_path")))
        session.register_component("data_loader", _LOADER[0])
    return session


#: botocore's names for a request that got no answer in time
_CLIENT_TIMEOUTS = frozenset({"ReadTimeoutError", "ConnectTimeoutError"})


class RequestDeadline(TimeoutError):
    """An S3 request (with the client's own retries) did not finish within its deadline."""


def _bounded_class() -> type:
    """``s3fs.S3FileSystem`` with a deadline on every request (made on first use)."""
    if _CLASS:
        return _CLASS[0]
    import s3fs

    class BoundedS3FileSystem(s3fs.S3FileSystem):
        """An s3fs filesystem whose every request ends within ``deadline`` seconds."""

        def __init__(self, *args: Any, deadline: float | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.atlas_deadline = deadline

        async def set_session(self, refresh: bool = False, kwargs: Any = None) -> Any:
            session: Any = getattr(self, "session", None)
            if session is None or (refresh and getattr(self, "_atlas_session", False)):
                self.session = aio_session(**self.kwargs)
                self._atlas_session = True
                self._session_is_owned = False  # s3fs must not replace it with a plain one
            client = await super().set_session(refresh, kwargs or {})
            track(self)  # (re)opened: close it at exit again
            return client

        async def _call_s3(self, method: Any, *args: Any, **kwargs: Any) -> Any:
            call = super()._call_s3(method, *args, **kwargs)
            try:
                if self.atlas_deadline is None:
                    return await call
                return await asyncio.wait_for(call, timeout=self.atlas_deadline)
            except TimeoutError as exc:
                raise RequestDeadline(
                    f"no answer to {method} within {self.atlas_deadline:g} s"
                ) from exc
            except Exception as exc:
                # the client's own timeouts (its attempts x read timeout is about the deadline,
                # so either may end first): one signal for "no answer in time", whichever fired
                if type(exc).__name__ not in _CLIENT_TIMEOUTS:
                    raise
                raise RequestDeadline(f"no answer to {method} ({type(exc).__name__})") from exc

    _CLASS.append(BoundedS3FileSystem)
    return BoundedS3FileSystem


def make_s3fs(options: dict[str, Any], timeouts: Timeouts, *, asynchronous: bool) -> Any:
    """An s3fs filesystem with ``options`` (credentials, endpoint), bounded by ``timeouts``.

    The client's retries stay inside the deadline: botocore makes ``client_attempts``, s3fs
    adds none (Atlas's retry policy retries around whole operations).
    """
    cls = _bounded_class()
    opts = dict(options)
    opts["config_kwargs"] = {**opts.get("config_kwargs", {}), **s3_config_kwargs(timeouts)}
    fs = cls(asynchronous=asynchronous, deadline=timeouts.deadline, **opts)
    fs.retries = 1
    track(fs)
    return fs


def track(fs: Any) -> None:
    """Remember ``fs`` so that its session is closed at exit."""
    with _LOCK:
        _OPEN[id(fs)] = fs
        if not _HOOKED_PID or _HOOKED_PID[0] != os.getpid():
            _HOOKED_PID[:] = [os.getpid()]
            atexit.register(close_all)
            # multiprocessing children end with os._exit(): atexit never runs there
            multiprocessing.util.Finalize(None, close_all, exitpriority=100)


async def _aclose(fs: Any) -> None:
    client, creator = getattr(fs, "_s3", None), getattr(fs, "_s3creator", None)
    fs._s3 = None
    if client is None:
        return
    clear = getattr(creator, "clear", None)  # s3fs's per-region client cache
    if clear is not None:
        await clear()
    await client.close()


def close_fs(fs: Any) -> None:
    """Close the aiohttp session of ``fs`` (it reconnects when used again); never raises."""
    with _LOCK:
        _OPEN.pop(id(fs), None)
    if getattr(fs, "_s3", None) is None:
        return
    with suppress(Exception):
        if getattr(fs, "asynchronous", False):
            from zarr.core.sync import sync

            # Atlas drives its asynchronous filesystems on zarr's event loop
            sync(_aclose(fs), timeout=5)
        else:
            from fsspec.asyn import sync as fsspec_sync

            fsspec_sync(fs.loop, _aclose, fs, timeout=5)


def close_all() -> None:
    """Close every S3 session this process opened (the exit hook)."""
    with _LOCK:
        open_now = list(_OPEN.values())
    for fs in open_now:
        close_fs(fs)
