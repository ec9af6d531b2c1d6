"""zarr-python's own store test suite (``zarr.testing.store.StoreTests``) on our zarr stores.

Every backend's bare zarr store (local, ``memory://``, S3 on SeaweedFS) and every wrapper
(error translation, faults, latency, retries, and the whole stack a :class:`Store` builds)
must behave as zarr expects of a store, including being re-created as ``cls(store=...)``,
``with_read_only``, pickling and the synchronous protocols. The helpers ``set``/``get`` reach
the bytes without the store under test, as the suite requires.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.stores import s3_store
from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import Buffer, cpu
from zarr.storage import LocalStore, WrapperStore
from zarr.testing.store import StoreTests

from atlas.storage import (
    FaultStore,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
    parse_url,
)
from atlas.storage.backends.memory import MemoryZarrStore
from atlas.storage.backends.s3 import S3ZarrStore


def _full_stack(base: ZarrStore) -> ZarrStore:
    """What :meth:`atlas.storage.Store.zarr_store` builds, below its top (retry) layer."""
    location = parse_url("memory://unused-name", site="zarr-suite")
    return LatencyStore(FaultStore(TranslatingStore(base, location)))


#: (name, wrapper class or None for the bare store, how the layers below it are built)
WRAPPINGS: list[tuple[str, type[WrapperStore[Any]] | None, Any]] = [
    ("bare", None, None),
    ("translating", TranslatingStore, lambda s: s),
    ("faults", FaultStore, lambda s: s),
    ("latency", LatencyStore, lambda s: s),
    ("retry", RetryStore, lambda s: s),
    ("stack", RetryStore, _full_stack),
]


class _Suite(StoreTests[Any, cpu.Buffer]):
    """StoreTests around one bare store class, optionally wrapped (set per subclass)."""

    buffer_cls = cpu.Buffer
    base_cls: type[ZarrStore]
    wrapper: type[WrapperStore[Any]] | None = None
    below: Any = None

    # -- how to make the bare store (per backend) --------------------------------------------
    def base_kwargs(self, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def raw_set(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def raw_get(self, key: str) -> bytes:
        raise NotImplementedError

    # -- StoreTests' hooks -------------------------------------------------------------------
    @property
    def store_cls(self) -> type[Any]:  # type: ignore[override]
        return self.wrapper or self.base_cls

    async def set(self, store: Any, key: str, value: Buffer) -> None:
        self.raw_set(key, value.to_bytes())

    async def get(self, store: Any, key: str) -> Buffer:
        return self.buffer_cls.from_bytes(self.raw_get(key))

    def cleanup(self) -> None:
        """Undo what :meth:`base_kwargs` left behind (after each test)."""

    @pytest.fixture
    def base(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
        yield self.base_kwargs(request, tmp_path)
        self.cleanup()

    @pytest.fixture
    def store_kwargs(self, base: dict[str, Any]) -> dict[str, Any]:
        if self.wrapper is None:
            return dict(base)
        return {"store": self.below(self.base_cls(**base))}

    @pytest.fixture
    def open_kwargs(self, base: dict[str, Any]) -> dict[str, Any]:
        if self.wrapper is None:
            return dict(base)
        return {"store_cls": self.base_cls, **base}

    @pytest.fixture
    def store(self, store_kwargs: dict[str, Any]) -> Any:
        return self.store_cls(**store_kwargs)

    @pytest.fixture
    def store_not_open(self, store_kwargs: dict[str, Any]) -> Any:
        return self.store_cls(**store_kwargs)

    def test_store_repr(self, store: Any) -> None:
        if self.wrapper is None:  # names where the bytes are
            where = getattr(store, "path", None) or store.root.as_posix()
            assert where in repr(store)
        else:  # zarr's WrapperStore repr: the wrapped store's class and text
            assert type(store._store).__name__ in repr(store)
            assert str(store._store) in repr(store)

    def test_store_supports_writes(self, store: Any) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: Any) -> None:
        assert store.supports_listing

    def test_store_supports_partial_writes(self, store: Any) -> None:
        assert not getattr(store, "supports_partial_writes", False)

    def test_wrapper_keeps_its_settings(self, store: Any) -> None:
        if self.wrapper is None:
            pytest.skip("a bare store has no wrapper settings")
        for clone in (store.with_read_only(True), store._with_store(store._store)):
            assert type(clone) is type(store)
            for name in ("location", "config", "policy"):
                assert getattr(clone, name, None) == getattr(store, name, None)


class _Local(_Suite):
    base_cls = LocalStore

    def base_kwargs(self, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
        self.root = tmp_path  # exists, as zarr's own suite expects for read-only opens
        return {"root": str(self.root)}

    def raw_set(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def raw_get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class _Memory(_Suite):
    base_cls = MemoryZarrStore

    def base_kwargs(self, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
        from fsspec.implementations.memory import MemoryFileSystem

        self.fs = MemoryFileSystem()
        self.path = f"/zarr-suite-{uuid.uuid4().hex[:10]}"
        afs = AsyncFileSystemWrapper(self.fs, asynchronous=True)
        return {"fs": afs, "path": self.path}

    def raw_set(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.path}/{key}", data)

    def raw_get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.path}/{key}"))


class _S3(_Suite):
    base_cls = S3ZarrStore

    def base_kwargs(self, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
        server = request.getfixturevalue("seaweed")
        handle = s3_store(server, retry=RetryPolicy())
        backend: Any = handle.backend
        # s3fs caches filesystems, and an async one belongs to the event loop that used it
        # first: every test (with its own loop) needs a fresh one
        type(backend.async_fs()).clear_instance_cache()
        handle.close()
        self.client = _client(server)
        self.bucket, self.prefix = handle.location.bucket, handle.location.prefix
        loc = handle.location
        self.fs = backend.make_fs(asynchronous=True)
        return {"fs": self.fs, "path": loc.root, "location": loc}

    def cleanup(self) -> None:
        # the filesystem belongs to this test's event loop, which ends with the test: no later
        # test (in this module or another) may be handed it from s3fs's cache
        type(self.fs).clear_instance_cache()

    def raw_set(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def raw_get(self, key: str) -> bytes:
        answer = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")
        return bytes(answer["Body"].read())


_CLIENTS: dict[str, Any] = {}


def _client(server: Any) -> Any:
    """One botocore client per server (making one takes a while)."""
    if server.endpoint_url not in _CLIENTS:
        _CLIENTS[server.endpoint_url] = server.s3_client()
    return _CLIENTS[server.endpoint_url]


def _classes(backend: type[_Suite], wrappings: list[tuple[str, Any, Any]]) -> dict[str, type]:
    out: dict[str, type] = {}
    for name, wrapper, below in wrappings:
        title = f"Test{backend.__name__.strip('_')}{name.title()}"
        attrs = {"wrapper": wrapper, "below": staticmethod(below) if below else None}
        out[title] = type(title, (backend,), attrs)
    return out


globals().update(_classes(_Local, WRAPPINGS))
globals().update(_classes(_Memory, WRAPPINGS))
# S3 on a real server: the bare store, and the whole stack (every wrapper at once)
globals().update(
    {
        name: pytest.mark.s3(cls)
        for name, cls in _classes(_S3, [WRAPPINGS[0], WRAPPINGS[-1]]).items()
    }
)
