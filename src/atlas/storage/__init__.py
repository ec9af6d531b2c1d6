"""Where bytes live: local directories, ``memory://`` and S3, for zarr, tensorstore and fsspec.

One :class:`Store` handle per location; one :class:`Backend` per URL scheme behind it, found
through :func:`backend_class` (register more with :func:`register_backend`); zarr wrappers
add error translation, injected latency and faults, and retries.
"""

from atlas.storage.base import Backend, ObjectStat
from atlas.storage.jsonio import parse_json_object
from atlas.storage.location import StoreLocation, parse_url
from atlas.storage.registry import backend_class, register_backend, registered_schemes
from atlas.storage.store import ProbeResult, Store, open_store
from atlas.storage.timeouts import Timeouts
from atlas.storage.wrappers import (
    FaultConfig,
    FaultStore,
    HookedStore,
    LatencyConfig,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
)

__all__ = [
    "Backend",
    "FaultConfig",
    "FaultStore",
    "HookedStore",
    "LatencyConfig",
    "LatencyStore",
    "ObjectStat",
    "ProbeResult",
    "RetryPolicy",
    "RetryStore",
    "Store",
    "StoreLocation",
    "Timeouts",
    "TranslatingStore",
    "backend_class",
    "open_store",
    "parse_json_object",
    "parse_url",
    "register_backend",
    "registered_schemes",
]
