"""Bounded work under load: a fixed number of render slots and a bounded wait queue.

A tile request that finds every slot busy waits, in arrival order, in a queue of at most
``queue_depth`` requests for at most ``wait_s`` seconds; a request that finds the queue full, or
waits longer, gets :class:`~atlas.errors.Overloaded` (HTTP 503 with ``Retry-After``). Waiting
costs no thread: a waiter is a future on its event loop, handed its slot directly by the
request that frees it. The process therefore never holds more than ``slots`` renders and
``queue_depth`` waiting requests, whatever the load.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from atlas.errors import InvalidInput, Overloaded

__all__ = ["RenderSlots", "SlotStats"]


@dataclass(frozen=True)
class SlotStats:
    """A snapshot of the limiter: slots in use, requests waiting, and how many were refused."""

    busy: int
    waiting: int
    refused: int
    served: int


class RenderSlots:
    """``slots`` renders at once; up to ``queue_depth`` more wait at most ``wait_s`` seconds.

    Parameters
    ----------
    slots
        Renders at once (at least 1).
    queue_depth
        Requests that may wait for a slot (0: none wait, a busy server answers 503 at once).
    wait_s
        How long a request waits before :class:`~atlas.errors.Overloaded`.
    """

    def __init__(self, slots: int, queue_depth: int, wait_s: float) -> None:
        if slots < 1 or queue_depth < 0 or not wait_s > 0:
            raise InvalidInput(
                f"render slots need slots >= 1, queue_depth >= 0, wait_s > 0; got "
                f"{slots}, {queue_depth}, {wait_s}"
            )
        self.slots = slots
        self.queue_depth = queue_depth
        self.wait_s = float(wait_s)
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self._refused = 0
        self._served = 0

    def stats(self) -> SlotStats:
        """Slots busy, requests waiting, requests refused and served so far."""
        with self._lock:
            return SlotStats(
                self.slots - self._free, len(self._waiters), self._refused, self._served
            )

    def _retry_after(self) -> float:
        # the queue drains in about wait_s once it is full: ask clients to come back then
        return max(1.0, math.ceil(self.wait_s))

    def _refuse(self, why: str) -> Overloaded:
        self._refused += 1
        return Overloaded(
            f"server busy: {why}; retry after {self._retry_after():.0f} s",
            retry_after=self._retry_after(),
        )

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if need be; :class:`Overloaded` if none comes."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0:
                self._free -= 1
                return
            if len(self._waiters) >= self.queue_depth:
                raise self._refuse(
                    f"all {self.slots} render slots busy and {len(self._waiters)} requests queued"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.wait_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    raise self._refuse(f"no render slot freed within {self.wait_s:g} s") from None
            # the slot was handed over just as the wait ended: it is ours, give it back
            # if the request is being cancelled, else use it
            if isinstance(exc, asyncio.CancelledError):
                self.release()
                raise

    def release(self) -> None:
        """Free a slot: the longest waiter gets it, else it becomes free."""
        with self._lock:
            self._served += 1
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # the waiter's loop is closed: try the next one
                    continue
                return
            self._free += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with slots.slot(): ...`` holds one slot for the block."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
