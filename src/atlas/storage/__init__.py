"""Where bytes live: local directories, ``memory://`` and S3, for zarr, tensorstore and fsspec."""

from atlas.storage.location import StoreLocation, parse_url
from atlas.storage.store import ProbeResult, Store, open_store
from atlas.storage.timeouts import Timeouts
from atlas.storage.wrappers import (
    FaultConfig,
    FaultStore,
    LatencyConfig,
    LatencyStore,
    RetryPolicy,
    RetryStore,
    TranslatingStore,
)

__all__ = [
    "FaultConfig",
    "FaultStore",
    "LatencyConfig",
    "LatencyStore",
    "ProbeResult",
    "RetryPolicy",
    "RetryStore",
    "Store",
    "StoreLocation",
    "Timeouts",
    "TranslatingStore",
    "open_store",
    "parse_url",
]
