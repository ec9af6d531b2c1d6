"""Time limits for remote stores: per-request timeouts and one deadline per operation.

A remote store that accepts connections and never answers must not make Atlas wait longer than
the site's settings allow. Three limits apply to every S3 operation (zarr reads and writes,
listings, conditional writes, ``HeadBucket``, DuckDB's reads through fsspec, tensorstore):

- ``connect``: seconds to open a TCP connection;
- ``read``: seconds to wait for the next bytes of an answer (a stalled transfer fails);
- ``operation``: the deadline of one operation, every retry and backoff wait included. When it
  passes, the operation fails with :class:`~atlas.errors.StoreUnavailable` at once, whatever
  the retry policy still allows. Unset, it is ``2 * (connect + read)``.

Every limit is validated when it is made: finite, positive seconds. See decision record 0023.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from atlas.errors import StoreUnavailable
from atlas.storage.limits import Timeouts, check_seconds
from atlas.storage.registry import backend_class

if TYPE_CHECKING:
    from atlas.storage.location import StoreLocation

__all__ = [
    "Deadline",
    "RetryRules",
    "Timeouts",
    "check_seconds",
    "configure_tensorstore_http",
    "deadline_error",
    "retry_within",
    "s3_config_kwargs",
    "tensorstore_context_spec",
    "ts_result",
]

T = TypeVar("T")

#: tensorstore's stall watchdog (libcurl low-speed limit), set once per process; see
#: :func:`configure_tensorstore_http`
TS_LOW_SPEED_TIME_ENV = "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS"
TS_LOW_SPEED_LIMIT_ENV = "TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES"


class RetryRules(Protocol):
    """What :func:`retry_within` needs of a retry policy (:class:`~atlas.storage.RetryPolicy`)."""

    @property
    def attempts(self) -> int:
        """Attempts in total."""
        ...

    @property
    def retry_on(self) -> tuple[type[BaseException], ...]:
        """The exceptions worth another attempt."""
        ...

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt``."""
        ...


class Deadline:
    """A point in (monotonic) time by which something must be done."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        left = self.remaining()
        return left is not None and left <= 0


async def retry_within(
    fn: Callable[[], Awaitable[T]],
    policy: RetryRules,
    *,
    deadline: float | None,
    on_deadline: Callable[[BaseException | None], BaseException],
    rng: random.Random | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``fn`` with ``policy``'s retries and backoff, all within ``deadline`` seconds.

    Each attempt is cancelled when the deadline passes, and no backoff wait runs past it; then
    ``on_deadline(last_error)`` is raised. ``None`` means no deadline (only the attempts cap).
    """
    limit = Deadline(deadline)
    attempt = 1
    last: BaseException | None = None
    while True:
        left = limit.remaining()
        if left is not None and left <= 0:
            raise on_deadline(last) from last
        try:
            if left is None:
                return await fn()
            return await asyncio.wait_for(fn(), timeout=left)
        except TimeoutError as exc:
            if limit.expired:
                raise on_deadline(exc) from exc
            last = exc
            if not isinstance(exc, policy.retry_on) or attempt >= policy.attempts:
                raise
        except policy.retry_on as exc:
            last = exc
            if attempt >= policy.attempts:
                raise
        if on_retry is not None:
            on_retry()
        wait = policy.delay(attempt, rng)
        left = limit.remaining()
        if left is not None and wait >= left:
            raise on_deadline(last) from last
        await asyncio.sleep(wait)
        attempt += 1


def deadline_error(
    deadline: float,
    timeouts: Timeouts | None,
    *,
    url: str,
    site: str | None,
    op: str,
    key: str | None,
) -> StoreUnavailable:
    """The error of an operation that ran out of time (``timeouts``: a remote store's limits)."""
    who = f"site {site!r} " if site else ""
    what = f"{op} key {key!r}" if key else op
    limits = f"deadline {deadline:g} s per operation"
    hint = ""
    if timeouts is not None:
        limits += f", connect {timeouts.connect:g} s, read {timeouts.read:g} s"
        hint = (
            " Raise connect_timeout, read_timeout or operation_timeout in sites.toml for a slow"
            " link."
        )
    return StoreUnavailable(
        f"{who}store {url} did not answer ({what}) within its time limits ({limits}, retries "
        f"included); is the endpoint up?{hint}",
        site=site,
        location=url,
    )


def s3_config_kwargs(timeouts: Timeouts) -> dict[str, Any]:
    """The botocore ``Config`` options (via s3fs ``config_kwargs``) for these timeouts."""
    return {
        "connect_timeout": timeouts.connect,
        "read_timeout": timeouts.read,
        "retries": {"max_attempts": timeouts.client_attempts, "mode": "standard"},
    }


def tensorstore_context_spec(timeouts: Timeouts) -> dict[str, Any]:
    """The tensorstore ``Context`` resources bounding S3 retries by these timeouts."""
    return {
        "s3_request_retries": {
            "max_retries": timeouts.client_attempts,
            "initial_delay": f"{min(1.0, timeouts.connect) / 10:g}s",
            "max_delay": f"{min(timeouts.read, timeouts.deadline / 4):g}s",
        }
    }


def configure_tensorstore_http(timeouts: Timeouts) -> None:
    """Give tensorstore's HTTP transport a stall limit of ``read`` seconds (once per process).

    tensorstore's S3 driver sets no request timeout; its libcurl low-speed watchdog, read from
    two environment variables when the first HTTP request is made, is the one bound it has. It
    is process-wide: the first remote store's read timeout applies, and values already set
    (by the user) are kept.
    """
    os.environ.setdefault(TS_LOW_SPEED_TIME_ENV, str(max(1, math.ceil(timeouts.read))))
    os.environ.setdefault(TS_LOW_SPEED_LIMIT_ENV, "1")


#: tensorstore status codes of a request that failed for want of an answer
_TS_UNAVAILABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CURL error")


def ts_result(
    future: Any, location: StoreLocation, what: str, limit: Deadline | None = None
) -> Any:
    """``future.result()`` of a tensorstore future, within the deadline of a remote store.

    ``limit`` is a deadline shared by several steps (default: a fresh one). Timing out, or
    tensorstore giving up on a stalled or refused request, raises :class:`StoreUnavailable`.
    """
    if not backend_class(location.scheme).is_remote:
        return future.result()
    timeouts = location.timeouts
    left = limit.remaining() if limit is not None else None
    try:
        return future.result(timeout=max(timeouts.deadline if left is None else left, 0.001))
    except TimeoutError as exc:
        with suppress(Exception):
            future.cancel()
        raise deadline_error(
            timeouts.deadline, timeouts, url=location.url, site=location.site, op=what, key=None
        ) from exc
    except ValueError as exc:
        text = str(exc)
        if not any(code in text for code in _TS_UNAVAILABLE):
            raise
        who = f"site {location.site!r} " if location.site else ""
        raise StoreUnavailable(
            f"{who}store {location.url} did not answer ({what}): {' '.join(text.split())[:200]}",
            site=location.site,
            location=location.url,
        ) from exc
