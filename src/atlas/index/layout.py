"""Where the index lives in a site's store, and which shard a subject belongs to.

::

    _index/CURRENT                                   pointer: {"version", "manifest_sha256"}
    _index/ERASING                                   the lock lease of a running erasure
    _index/versions/<version>/CLAIM                  the lease of the build writing it
    _index/versions/<version>/manifest.json          shards, row counts, checksums, statistics
    _index/versions/<version>/<table>/shard-<i>-of-<n>.parquet
    _index/versions/<version>/_scratch/              a local store's build scratch (temporary)
    _consent/collections/<collection>.json           default consent scopes of a collection
    _consent/subjects/<subject>.json                 a subject's own scopes (overrides)
    _releases/<name>.json                            pinned versions across sites
    _audit/<time>-<random>.json                      append-only audit log

A subject's rows (series, images, annotations) always sit in shard
``blake2b(subject_id) mod n`` of every table, with ``n`` a power of two, so a subject never spans
shards and doubling ``n`` splits each shard in two.
"""

from __future__ import annotations

import hashlib
import math

from atlas.errors import InvalidInput

INDEX_PREFIX = "_index"
CURRENT_KEY = f"{INDEX_PREFIX}/CURRENT"
TABLES = ("series", "images", "annotations")
#: the most shards a table may have (names hold five digits; 4096 x 2M rows is plenty)
MAX_SHARDS = 4096
#: rows of the images table per shard the builder aims for
TARGET_ROWS_PER_SHARD = 2_000_000


def version_prefix(version: str) -> str:
    """The folder of one index version."""
    return f"{INDEX_PREFIX}/versions/{version}"


def manifest_key(version: str) -> str:
    """The manifest of one index version."""
    return f"{version_prefix(version)}/manifest.json"


def shard_key(version: str, table: str, shard: int, n_shards: int) -> str:
    """The Parquet object of one shard of one table."""
    return f"{version_prefix(version)}/{table}/shard-{shard:05d}-of-{n_shards:05d}.parquet"


def shard_of(subject_id: str, n_shards: int) -> int:
    """The shard of a subject: a stable hash, identical on every machine and Python version."""
    digest = hashlib.blake2b(subject_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def shard_count(image_rows: int, target: int = TARGET_ROWS_PER_SHARD) -> int:
    """Shards for an index of ``image_rows`` rows: a power of two, at least 1."""
    need = max(1, math.ceil(image_rows / max(target, 1)))
    return 1 << (need - 1).bit_length()


def check_shard_count(n_shards: int) -> int:
    """``n_shards`` if it is a power of two from 1 to :data:`MAX_SHARDS`, else InvalidInput."""
    if (
        isinstance(n_shards, bool)
        or not isinstance(n_shards, int)
        or not 1 <= n_shards <= MAX_SHARDS
        or n_shards & (n_shards - 1)
    ):
        raise InvalidInput(
            f"the number of shards must be a power of two from 1 to {MAX_SHARDS} "
            f"(1, 2, 4, 8, ...), got {n_shards!r}"
        )
    return n_shards


def version_name(number: int) -> str:
    """Version names sort in creation order: ``v000001``, ``v000002``, ..."""
    return f"v{number:06d}"
