"""zarr v3 store wrappers: error translation, injected latency and faults, and retries.

Every wrapper is a :class:`zarr.storage.WrapperStore`, so anything that takes a zarr store
(zarr-python arrays and groups, our OME-Zarr writer and reader, the byte helpers on
:class:`atlas.storage.Store`) goes through the same stack::

    RetryStore( LatencyStore( FaultStore( TranslatingStore( a backend's zarr store ))))

Faults sit inside the retry layer, so a transient injected fault is retried exactly like a
real dropped connection would be.
"""

from __future__ import annotations

import asyncio
import fnmatch
import random
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import WrapperStore

from atlas.errors import AtlasError, ConfigError, InjectedFault, StoreUnavailable
from atlas.storage.failures import translate
from atlas.storage.location import StoreLocation
from atlas.storage.registry import backend_class
from atlas.storage.timeouts import check_seconds, deadline_error, retry_within

T = TypeVar("T")

READ_OPS = frozenset({"get", "exists", "list"})
WRITE_OPS = frozenset({"set", "delete"})


class HookedStore(WrapperStore[Store]):
    """A zarr ``WrapperStore`` that runs every operation through :meth:`_call` (override it).

    It follows zarr's wrapper protocol: ``cls(store=inner)`` builds one with default settings,
    :meth:`with_read_only` and ``with`` re-create it around a new inner store with the same
    settings, and it pickles with its settings. The synchronous protocols zarr defines
    (``get_sync``, ``set_sync``, ``delete_sync``) go through the same hooks, on zarr's event
    loop. :meth:`call` runs any async step through this wrapper and every wrapper below it,
    as if it were a zarr operation ``op`` on ``key`` (conditional writes use it).
    """

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await fn()

    async def call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` through the hooks of this wrapper and of the wrappers below it."""
        inner = self._store
        if isinstance(inner, HookedStore):
            return await self._call(op, key, lambda: inner.call(op, key, fn))
        return await self._call(op, key, fn)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        return await self._call("get", key, lambda: self._store.get(key, prototype, byte_range))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        ranges = list(key_ranges)
        return list(await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return await self._call("exists", key, lambda: self._store.exists(key))

    async def set(self, key: str, value: Buffer) -> None:
        await self._call("set", key, lambda: self._store.set(key, value))

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        await asyncio.gather(*(self.set(key, value) for key, value in values))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._call("set", key, lambda: self._store.set_if_not_exists(key, value))

    async def delete(self, key: str) -> None:
        await self._call("delete", key, lambda: self._store.delete(key))

    async def _collect(self, key: str, gen: Callable[[], AsyncIterator[str]]) -> list[str]:
        async def run() -> list[str]:
            return [k async for k in gen()]

        return await self._call("list", key, run)

    async def list(self) -> AsyncIterator[str]:
        for k in await self._collect("", self._store.list):
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for k in await self._collect(prefix, lambda: self._store.list_prefix(prefix)):
            yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for k in await self._collect(prefix, lambda: self._store.list_dir(prefix)):
            yield k

    # zarr's synchronous store protocols (SupportsGetSync, SupportsSetSync, SupportsDeleteSync)
    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """``get`` from synchronous code (through the hooks, on zarr's event loop)."""
        return sync(self.get(key, prototype or default_buffer_prototype(), byte_range))

    def set_sync(self, key: str, value: Buffer) -> None:
        """``set`` from synchronous code (through the hooks, on zarr's event loop)."""
        sync(self.set(key, value))

    def delete_sync(self, key: str) -> None:
        """``delete`` from synchronous code (through the hooks, on zarr's event loop)."""
        sync(self.delete(key))


class TranslatingStore(HookedStore):
    """Re-raises backend exceptions as :mod:`atlas.errors` naming the site, URL and key."""

    def __init__(self, store: Store, location: StoreLocation | None = None) -> None:
        super().__init__(store)
        self.location = location

    def _with_store(self, store: Store) -> TranslatingStore:
        return type(self)(store, self.location)

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        if self.location is None:  # nothing to name in a message: pass errors through
            return await fn()
        try:
            return await fn()
        except AtlasError:
            raise
        except Exception as exc:
            mapped = translate(exc, self.location, key or None, op)
            if mapped is None:
                raise
            raise mapped from exc


@dataclass(frozen=True)
class LatencyConfig:
    """Added delay per request, in seconds: ``base`` plus uniform ``jitter``."""

    base: float = 0.0
    jitter: float = 0.0
    ops: frozenset[str] = READ_OPS | WRITE_OPS


class LatencyStore(HookedStore):
    """Sleeps before each request, to emulate a far-away object store in tests and benchmarks."""

    def __init__(
        self, store: Store, config: LatencyConfig | None = None, seed: int | None = None
    ) -> None:
        super().__init__(store)
        self.config = config or LatencyConfig()
        self.seed = seed
        self._rng = random.Random(seed)

    def _with_store(self, store: Store) -> LatencyStore:
        return type(self)(store, self.config, self.seed)

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        if op in self.config.ops:
            delay = self.config.base + self.config.jitter * self._rng.random()
            if delay > 0:
                await asyncio.sleep(delay)
        return await fn()


@dataclass(frozen=True)
class FaultConfig:
    """Which requests fail on purpose.

    ``probability`` fails a random share of matching requests; ``fail_first`` fails the first N
    attempts on each matching key and then lets it through (a transient fault that a retry
    overcomes); ``corrupt`` flips bytes in what ``get`` returns instead of raising (every
    matching ``get`` unless ``probability``/``fail_first`` narrow it). Keys match the glob
    ``pattern``.
    """

    probability: float = 0.0
    fail_first: int = 0
    ops: frozenset[str] = READ_OPS | WRITE_OPS
    pattern: str = "*"
    corrupt: bool = False
    seed: int = 0


class FaultStore(HookedStore):
    """Injects :class:`atlas.errors.InjectedFault` (or corrupted bytes) per :class:`FaultConfig`."""

    def __init__(self, store: Store, config: FaultConfig | None = None) -> None:
        super().__init__(store)
        self.config = config or FaultConfig()
        self._rng = random.Random(self.config.seed)
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.injected = 0

    def _with_store(self, store: Store) -> FaultStore:
        return type(self)(store, self.config)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]  # a lock does not pickle; the copy gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _should_fail(self, op: str, key: str) -> bool:
        cfg = self.config
        if op not in cfg.ops or not fnmatch.fnmatchcase(key, cfg.pattern):
            return False
        if cfg.corrupt and op != "get":
            return False
        if cfg.corrupt and not cfg.probability and not cfg.fail_first:
            return True
        with self._lock:
            if cfg.fail_first:
                n = self._attempts.get((op, key), 0)
                self._attempts[(op, key)] = n + 1
                if n < cfg.fail_first:
                    return True
            return cfg.probability > 0 and self._rng.random() < cfg.probability

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        if not self._should_fail(op, key):
            return await fn()
        self.injected += 1
        if self.config.corrupt and op == "get":
            result = await fn()
            if isinstance(result, Buffer) and len(result):
                raw = bytearray(result.to_bytes())
                for i in range(0, len(raw), max(1, len(raw) // 8)):
                    raw[i] ^= 0xFF
                return type(result).from_bytes(bytes(raw))
            return result
        raise InjectedFault(f"injected fault on {op} {key!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures (``StoreUnavailable``).

    ``Forbidden``, ``NotFound``, ``InvalidInput`` and ``CorruptData`` are never retried: retrying
    cannot fix them. ``deadline`` caps the seconds one operation may take, every attempt and
    wait included; remote stores also apply their :class:`~atlas.storage.Timeouts` deadline
    (the smaller one wins).
    """

    attempts: int = 4
    base_delay: float = 0.05
    max_delay: float = 2.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = field(default=(StoreUnavailable,))
    deadline: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"retry attempts must be an integer, got {self.attempts!r}")
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be at least 1, got {self.attempts}")
        for name in ("base_delay", "max_delay"):
            check_seconds(getattr(self, name), f"retry {name}")
        m = self.multiplier
        if isinstance(m, bool) or not isinstance(m, int | float) or not 1 <= m < float("inf"):
            raise ConfigError(f"retry multiplier must be a finite number >= 1, got {m!r}")
        if self.deadline is not None:
            check_seconds(self.deadline, "retry deadline")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(0, cap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "attempts": self.attempts,
            "base_delay": self.base_delay,
            "max_delay": self.max_delay,
            "multiplier": self.multiplier,
            "deadline": self.deadline,
        }


class RetryStore(HookedStore):
    """Retries transient failures of the wrapped store per :class:`RetryPolicy`.

    With a ``location`` of a remote store, every operation (its retries and waits included)
    also ends within the location's :attr:`~atlas.storage.Timeouts.deadline`, failing with
    :class:`StoreUnavailable`.
    """

    def __init__(
        self,
        store: Store,
        policy: RetryPolicy | None = None,
        *,
        location: StoreLocation | None = None,
    ) -> None:
        super().__init__(store)
        self.policy = policy = policy or RetryPolicy()
        self.location = location
        self.retries = 0
        self._rng = random.Random()
        self._remote = location is not None and backend_class(location.scheme).is_remote
        limits = [policy.deadline]
        if location is not None and self._remote:
            limits.append(location.timeouts.deadline)
        given = [d for d in limits if d is not None]
        self.deadline: float | None = min(given) if given else None

    def _with_store(self, store: Store) -> RetryStore:
        return type(self)(store, self.policy, location=self.location)

    def _count(self) -> None:
        self.retries += 1

    async def _call(self, op: str, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        def late(_last: BaseException | None) -> BaseException:
            loc = self.location
            return deadline_error(
                self.deadline or 0.0,
                loc.timeouts if loc is not None and self._remote else None,
                url=loc.url if loc is not None else "(store)",
                site=loc.site if loc is not None else None,
                op=op,
                key=key or None,
            )

        return await retry_within(
            fn,
            self.policy,
            deadline=self.deadline,
            on_deadline=late,
            rng=self._rng,
            on_retry=self._count,
        )
