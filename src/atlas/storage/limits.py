"""Network limits of remote stores, as settings: validated, finite, positive seconds.

:class:`Timeouts` is plain data held by every :class:`~atlas.storage.StoreLocation`; how the
limits are enforced is in :mod:`atlas.storage.timeouts` (decision 0023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from atlas.errors import ConfigError

__all__ = ["Timeouts", "check_seconds"]


def check_seconds(value: object, name: str, where: str = "") -> float:
    """``value`` as float seconds if it is a finite, positive number, else :class:`ConfigError`.

    ``name`` is the setting (``read_timeout``), ``where`` what holds it (a site, a file).
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{prefix}{name} must be a positive number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(
            f"{prefix}{name} must be a finite, positive number of seconds, got {value!r}"
        )
    return seconds


@dataclass(frozen=True)
class Timeouts:
    """Network limits for remote stores: a dead or silent endpoint fails within these bounds.

    Parameters
    ----------
    connect:
        Seconds to open a connection.
    read:
        Seconds to wait for the next bytes of an answer.
    client_attempts:
        Attempts the S3 client makes itself per request (botocore's ``max_attempts``); Atlas's
        :class:`~atlas.storage.RetryPolicy` retries around them, all within ``operation``.
    operation:
        Deadline of one store operation, retries and backoff included; ``None`` means
        ``2 * (connect + read)``.
    """

    connect: float = 3.0
    read: float = 30.0
    client_attempts: int = 2
    operation: float | None = None

    def __post_init__(self) -> None:
        check_seconds(self.connect, "connect_timeout")
        check_seconds(self.read, "read_timeout")
        if self.operation is not None:
            check_seconds(self.operation, "operation_timeout")
        attempts = self.client_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
            raise ConfigError(f"client_attempts must be an integer from 1 to 20, got {attempts!r}")

    @property
    def deadline(self) -> float:
        """Seconds one operation may take in all (``operation``, else ``2 * (connect + read)``)."""
        return self.operation if self.operation is not None else 2 * (self.connect + self.read)
