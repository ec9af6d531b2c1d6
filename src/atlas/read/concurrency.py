"""How many shard reads to keep in flight per site, from the site's measured round-trip time.

A reader is busy either waiting for bytes or decoding them. With ``c`` cores, each spending
``s`` seconds of CPU on one shard read (decoding the inner chunks a patch needs from one
shard and copying them out), the process can consume ``c / s`` reads per second. To keep the
cores fed, reads must be waiting in the network for the whole round trip ``L``; by Little's law
(items in a system = arrival rate x time in the system) that needs ``c / s * L`` reads in
flight, plus the ``c`` being decoded:

``in_flight = ceil(c * (1 + L / s))``, clamped to ``[MIN_IN_FLIGHT, MAX_IN_FLIGHT]``.

``s`` is :data:`READ_SERVICE_S` (1 ms: the tensorstore engine reads about 2,000 patches of 32^3
int16 per second from a local disk on 2 cores, docs/decisions/0043). A local disk (``L`` ~
0.05 ms) gets the floor, :data:`MIN_IN_FLIGHT`; a site 20 ms away gets ``21 c`` (42 on two
cores, 336 on sixteen); 60 ms gets ``61 c``. The floor is there because tensorstore coalesces
the reads of one shard issued in one batch: on loopback SeaweedFS, 4 reads in flight gave
170 patches/s, 32 gave 358 (decision 0043).

The budget counts shard reads, not requests: a read weighs the number of shard objects it
touches (:attr:`atlas.read.plan.PlannedRead.gets`), so a whole-volume read counts as many
reads as it has shards.

``L`` is the fastest of :data:`LATENCY_SAMPLES` small GETs made through the engine's own path
on the site's first use (the first GET also pays for the connection, hence the minimum). It is
the unloaded round trip: a store whose server shares this machine's CPUs answers slower under
load, and may be better served by a larger fixed ``concurrency``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from atlas.errors import InvalidInput

__all__ = [
    "LATENCY_SAMPLES",
    "MAX_IN_FLIGHT",
    "MIN_IN_FLIGHT",
    "READ_SERVICE_S",
    "available_cores",
    "check_concurrency",
    "in_flight_for",
    "measure_latency",
]

#: CPU seconds one shard read costs (the ``s`` of the formula)
READ_SERVICE_S = 0.001
#: the fewest shard reads kept in flight (tensorstore coalesces the reads of a batch)
MIN_IN_FLIGHT = 16
#: the most shard reads kept in flight per site (memory: each holds its compressed bytes)
MAX_IN_FLIGHT = 512
#: small GETs timed to estimate a site's round trip
LATENCY_SAMPLES = 3


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def in_flight_for(
    latency_s: float, *, cores: int | None = None, service_s: float = READ_SERVICE_S
) -> int:
    """Shard reads to keep in flight for a site ``latency_s`` seconds away (see module doc).

    Parameters
    ----------
    latency_s
        The site's round-trip time for a small GET, in seconds.
    cores
        CPU cores decoding (default: those available to the process).
    service_s
        CPU seconds one shard read costs.

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
