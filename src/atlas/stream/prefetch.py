"""Read ahead on a background thread, bounded in bytes: :func:`prefetch`.

A training step consumes samples while the next reads are already in flight. The reads run
on one producer thread (each read is itself concurrent: :meth:`atlas.read.Reader.read_many`);
what they return waits in a queue whose size is counted in **bytes**, not items, so a batch of
large 3D patches and a batch of small 2D slices are held to the same memory bound. The
producer starts a read only while less than the budget is held, so at most the budget plus
one result is ever held; it may always hold one result, however large, so a budget smaller
than a batch slows reading down but never blocks it.

No torch here: the thread hands back whatever ``read`` returns, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from atlas.errors import InvalidInput

__all__ = ["Prefetcher", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    """Iterate ``read(item)`` for each item of ``items``, read ahead up to ``budget`` bytes.

    Parameters
    ----------
    items
        What to read, in order (e.g. lists of sample specs).
    read
        Turns one item into a result; runs on the producer thread.
    size
        The bytes a result holds (counted against ``budget`` until it is taken).
    budget
        Bytes of results held ahead of the consumer: a read starts only while less is held
        (so at most ``budget`` plus one result is held; one result is always allowed).

    An exception raised by ``read`` is re-raised to the consumer, in order, at the item that
    caused it; reading stops there. :meth:`close` (or leaving a ``with`` block, or dropping
    the iterator) stops the thread.
    """

    def __init__(
        self,
        items: Iterable[T],
        read: Callable[[T], R],
        size: Callable[[R], int],
        budget: int,
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise InvalidInput(f"prefetch budget must be an integer >= 0 (bytes), got {budget!r}")
        self._items = iter(items)
        self._read = read
        self._size = size
        self.budget = budget
        self._ready: deque[tuple[R | None, int, BaseException | None]] = deque()
        self._held = 0
        #: the most bytes held at once (what the budget bounded)
        self.peak_bytes = 0
        self._done = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._produce, name="atlas-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        while True:
            with self._cond:
                # wait for room: always allowed when nothing is held
                while not self._closed and self._ready and self._held >= self.budget:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                item = next(self._items)
            except StopIteration:
                self._finish(None)
                return
            except BaseException as exc:  # the item source itself failed
                self._finish(exc)
                return
            try:
                result = self._read(item)
                nbytes = int(self._size(result))
            except BaseException as exc:
                self._finish(exc)
                return
            with self._cond:
                if self._closed:
                    return
                self._ready.append((result, nbytes, None))
                self._held += nbytes
                self.peak_bytes = max(self.peak_bytes, self._held)
                self._cond.notify_all()

    def _finish(self, exc: BaseException | None) -> None:
        with self._cond:
            if exc is not None:
                self._ready.append((None, 0, exc))
            self._done = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        with self._cond:
            while not self._ready and not self._done and not self._closed:
                self._cond.wait()
            if not self._ready:
                raise StopIteration
            result, nbytes, exc = self._ready.popleft()
            self._held -= nbytes
            self._cond.notify_all()
        if exc is not None:
            self.close()
            raise exc
        return result  # type: ignore[return-value]

    @property
    def held_bytes(self) -> int:
        """Bytes read ahead and not yet taken."""
        with self._cond:
            return self._held

    def close(self) -> None:
        """Stop reading ahead and drop what was read (waits for a read in progress)."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._held = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(
    items: Iterable[T], read: Callable[[T], R], size: Callable[[R], int], budget: int
) -> Prefetcher[T, R]:
    """Read ``items`` ahead on a thread within ``budget`` bytes (see :class:`Prefetcher`)."""
    return Prefetcher(items, read, size, budget)
