"""How many chunk reads to keep in flight per site, from the site's measured round-trip time.

A reader is busy either waiting for bytes or decoding them. With ``c`` cores, each decoding
one inner chunk in ``s`` seconds of CPU, the process can consume ``c / s`` chunks per second.
To keep the cores fed, requests must be waiting in the network for the whole round trip
``L``; by Little's law (items in a system = arrival rate x time in the system), that needs
``c / s * L`` requests in flight, plus ``c`` being decoded:

``in_flight = ceil(c * (1 + L / s))``, clamped to ``[MIN_IN_FLIGHT, MAX_IN_FLIGHT]``.

``s`` is :data:`CHUNK_SERVICE_S` (2 ms: decoding a 32 x 64 x 64 int16 zstd chunk, 256 KiB,
measured at about 1-2 ms on this project's machines; docs/decisions/0043). A local disk
(``L`` ~ 0.05 ms) gets ``c`` + 1 (at least 4); a site 20 ms away gets ``11 c`` (22 on two
cores); 60 ms gets ``31 c``. The budget counts inner chunks, not requests: a whole-volume read
weighs as many chunks as it touches (:class:`atlas.read.plan.PlannedRead`), so a few large reads
and many small ones load the site alike.

``L`` is the fastest of :data:`LATENCY_SAMPLES` small GETs of the image's metadata, made
through the engine's own path on the site's first read (the first GET also pays for the
connection, hence the minimum).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from atlas.errors import InvalidInput

__all__ = [
    "CHUNK_SERVICE_S",
    "LATENCY_SAMPLES",
    "MAX_IN_FLIGHT",
    "MIN_IN_FLIGHT",
    "available_cores",
    "check_concurrency",
    "in_flight_for",
    "measure_latency",
]

#: CPU seconds to decode one inner chunk (the ``s`` of the formula)
CHUNK_SERVICE_S = 0.002
#: the fewest chunk reads kept in flight (a local disk still overlaps a few reads)
MIN_IN_FLIGHT = 4
#: the most chunk reads kept in flight per site (memory: each holds a compressed chunk)
MAX_IN_FLIGHT = 256
#: small GETs timed to estimate a site's round trip
LATENCY_SAMPLES = 3


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def in_flight_for(
    latency_s: float, *, cores: int | None = None, service_s: float = CHUNK_SERVICE_S
) -> int:
    """Chunk reads to keep in flight for a site ``latency_s`` seconds away (see module doc).

    Parameters
    ----------
    latency_s
        The site's round-trip time for a small GET, in seconds.
    cores
        CPU cores decoding (default: those available to the process).
    service_s
        CPU seconds to decode one chunk.

    Returns
    -------
    int
        ``ceil(cores * (1 + latency_s / service_s))`` within ``[MIN_IN_FLIGHT, MAX_IN_FLIGHT]``.
    """
    if not math.isfinite(latency_s) or latency_s < 0:
        raise InvalidInput(f"latency must be a finite number of seconds >= 0, got {latency_s!r}")
    c = cores or available_cores()
    n = math.ceil(c * (1 + latency_s / service_s))
    return max(MIN_IN_FLIGHT, min(MAX_IN_FLIGHT, n))


def measure_latency(get: Callable[[], Any], samples: int = LATENCY_SAMPLES) -> float:
    """The fastest of ``samples`` calls of ``get`` (one small GET each), in seconds."""
    best = math.inf
    for _ in range(max(1, samples)):
        t0 = time.perf_counter()
        get()
        best = min(best, time.perf_counter() - t0)
    return best


def check_concurrency(value: Any) -> int | None:
    """A fixed in-flight budget (a positive int) or ``None`` (auto); else InvalidInput."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"concurrency must be a positive integer or None, got {value!r}")
    return value
