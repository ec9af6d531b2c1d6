"""Build a new index version from the staging records, then publish it atomically.

The build reads every staging object of the site with DuckDB (spilling to disk, bounded
memory), attaches each subject's shard and consent scopes, denormalises the fields queries
filter on (an image row knows its labels and its series' body part), sorts each shard by
subject and series (so lookups prune row groups), and writes one Parquet object per shard and
table *beside* the current version. The manifest lists every shard with its row count, size,
SHA-256 and column statistics. Publishing is one compare-and-swap of ``_index/CURRENT``
(:mod:`atlas.index.publish`): two builds racing each other cannot both win, and readers never
see half a version.

A build holds a lease on its version folder (:mod:`atlas.index.lease`) and keeps its temporary
files where erasure and garbage collection find them (:mod:`atlas.index.scratch`). A build that
fails removes what it wrote; one killed outright leaves an unpublished folder that
``atlas index gc`` (or erasure) removes once its lease has expired.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas.errors import CorruptData, InvalidInput, NotFound
from atlas.index import layout, scratch
from atlas.index.lease import DEFAULT_TTL_S, Lease, claim
from atlas.index.publish import publish, read_current
from atlas.privacy import consent
from atlas.records import STAGING_PREFIX
from atlas.records import schemas as staging_schemas
from atlas.records.ownership import check_site
from atlas.storage import Store

MANIFEST_FORMAT = 1
#: column statistics kept in the manifest (never ids: an erased subject could be a min/max)
STATS_COLUMNS = {
    "series": ("collection", "modality"),
    "images": ("collection", "modality", "z_index"),
    "annotations": ("collection", "label_name", "voxel_count"),
}


@dataclass(frozen=True)
class BuildResult:
    """What a build produced."""

    version: str
    parent: str | None
    rows: dict[str, int]
    n_shards: int
    bytes: int
    seconds: float


def duck_url(store: Store, key: str) -> str:
    """How DuckDB (with the store's fsspec filesystem registered) names ``key``."""
    return store.query_url(key)


def connect(store: Store, memory_limit: str = "2GB", threads: int | None = None) -> Any:
    """A DuckDB connection that can read ``store`` (fsspec registered for memory/S3)."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{_safe_limit(memory_limit)}'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute("SET preserve_insertion_order = false")
    # index shards are immutable objects: cache their Parquet footers across queries
    con.execute("SET parquet_metadata_cache = true")
    if not store.has_local_root:
        con.register_filesystem(store.fs)
    return con


def _safe_limit(text: str) -> str:
    if not text.replace(".", "").rstrip("GBMKgbmk").isdigit():
        raise InvalidInput(f"bad memory limit {text!r}")
    return text


def require_store(store: Store) -> None:
    """Raise :class:`NotFound` when a local store's folder does not exist.

    Reading (and building, querying, erasing) never creates a store; only ingest does.
    """
    loc = store.location
    if store.has_local_root and not os.path.isdir(loc.root):
        raise NotFound(
            f"no store at {loc.root} (nothing was created); check the path, or run "
            "`atlas ingest` into it first",
            site=store.site,
            location=loc.url,
        )


def _staging_urls(store: Store, table: str) -> list[str]:
    return [
        duck_url(store, k)
        for k in store.list(f"{STAGING_PREFIX}/{table}/")
        if k.endswith(".parquet")
    ]


def _shard_stats(path: Path, columns: tuple[str, ...]) -> dict[str, list[Any]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    out: dict[str, list[Any]] = {}
    for col in columns:
        if col not in names:
            continue
        idx = names.index(col)
        lows, highs = [], []
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(idx).statistics
            if st is not None and st.has_min_max:
                lows.append(st.min)
                highs.append(st.max)
        if lows:
            out[col] = [min(lows), max(highs)]
    return out


def build_index(
    store: Store,
    *,
    n_shards: int | None = None,
    memory_limit: str = "2GB",
    workdir: str | None = None,
    lease_s: float = DEFAULT_TTL_S,
) -> BuildResult:
    """Compact the site's staging records into a new index version and publish it.

    Parameters
    ----------
    store:
        The site's store (it must exist: building never creates a store).
    n_shards:
        Shards per table, a power of two from 1 to :data:`atlas.index.layout.MAX_SHARDS`;
        ``None`` chooses by size.
    memory_limit:
        DuckDB's memory limit; beyond it DuckDB spills to the build's scratch folder.
    workdir:
        Where the private scratch folder goes for stores that are not local directories
        (default: the system's temporary folder). Local stores keep it inside the version folder.
    lease_s:
        Seconds the build's lease stays live without a heartbeat (renewed every quarter).

    Raises
    ------
    InvalidInput
        ``n_shards`` is not a power of two in range.
    NotFound
        The store does not exist or holds no staging records.
    ConcurrentBuild
        Another build (or an erasure) published first; nothing of this build is left behind.
    """
    import duckdb

    t0 = time.perf_counter()
    require_store(store)
    check_site(store, store.site)  # an index built under another name would mislabel its rows
    if n_shards is not None:
        layout.check_shard_count(n_shards)
    pointer, token = read_current(store)
    sources = {t: _staging_urls(store, t) for t in layout.TABLES}
    if not sources["series"]:
        raise NotFound(
            f"no staging records in {store.url}; run `atlas ingest` first",
            site=store.site,
            location=store.url,
        )
    scratch.sweep(store, workdir)  # what killed builds left on this machine
    lease = claim(store, pointer, ttl_s=lease_s).start()
    version = lease.version
    published = False
    try:
        con = connect(store, memory_limit)
        tmp = scratch.make(store, lease, workdir)
    except BaseException:
        abandon(store, lease)
        raise
    try:
        con.execute(f"SET temp_directory = {_sql_text(tmp / 'spill')}")
        for table in layout.TABLES:
            urls = sources[table]
            if urls:
                listing = ", ".join("'" + u.replace("'", "''") + "'" for u in urls)
                con.execute(
                    f"CREATE VIEW staging_{table} AS "
                    f"SELECT * FROM read_parquet([{listing}], union_by_name=true)"
                )
            else:
                con.register(f"staging_{table}", staging_schemas()[table].empty_table())
        image_rows = int(con.execute("SELECT count(*) FROM staging_images").fetchall()[0][0])
        shards = layout.check_shard_count(
            n_shards or min(layout.shard_count(image_rows), layout.MAX_SHARDS)
        )
        subjects = con.execute(
            "SELECT DISTINCT subject_id, collection FROM staging_series"
        ).fetchall()
        defaults, overrides = consent.load(store)
        import pyarrow as pa

        submap = pa.table(
            {
                "subject_id": [s for s, _ in subjects],
                "collection": [c for _, c in subjects],
                "shard": [layout.shard_of(s, shards) for s, _ in subjects],
                "consent": [consent.scopes_of(s, c, defaults, overrides) for s, c in subjects],
            }
        )
        con.register("submap", submap)
        con.execute(
            """CREATE TABLE labels_per_image AS
               SELECT image_id, list(DISTINCT label_name ORDER BY label_name) AS labels
               FROM staging_annotations GROUP BY image_id"""
        )
        queries = {
            "series": """SELECT s.*, m.consent, m.shard FROM staging_series s
                         JOIN submap m USING (subject_id, collection)""",
            "images": """SELECT i.*, coalesce(l.labels, []::VARCHAR[]) AS labels,
                                s.body_part, s.sex, s.age_years, s.manufacturer,
                                m.consent, m.shard
                         FROM staging_images i
                         JOIN submap m USING (subject_id, collection)
                         LEFT JOIN labels_per_image l USING (image_id)
                         LEFT JOIN (SELECT DISTINCT series_id, volume, body_part, sex, age_years,
                                           manufacturer FROM staging_series) s
                              USING (series_id, volume)""",
            "annotations": """SELECT a.*, m.consent, m.shard FROM staging_annotations a
                              JOIN submap m USING (subject_id, collection)""",
        }
        order = {
            "series": "subject_id, series_id, volume",
            "images": "subject_id, series_id, volume, z_index",
            "annotations": "subject_id, series_id, volume, z_index, label_image, label_value",
        }
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "parent": pointer["version"] if pointer else None,
            "site": store.site,
            "created_unix": int(time.time()),
            "n_shards": shards,
            # each collection's default consent scopes at build time (no subject-level detail):
            # lets a query that finds nothing say which collections its purpose does not cover
            "collections": {c: defaults.get(c, []) for c in sorted({c for _, c in subjects})},
            "tables": {},
        }
        total_bytes = 0
        rows: dict[str, int] = {}
        for table in layout.TABLES:
            out_dir = tmp / table
            con.execute(
                f"""COPY (SELECT * FROM ({queries[table]}) ORDER BY shard, {order[table]})
                    TO {_sql_text(out_dir)} (FORMAT parquet, PARTITION_BY (shard),
                    COMPRESSION zstd, ROW_GROUP_SIZE 65536, OVERWRITE_OR_IGNORE true)"""
            )
            entries = []
            for shard in range(shards):
                lease.check()
                files = sorted((out_dir / f"shard={shard}").glob("*.parquet"))
                entries.append(_upload_shard(store, version, table, shard, shards, files, con, tmp))
            manifest["tables"][table] = {
                "rows": sum(e["rows"] for e in entries),
                "bytes": sum(e["bytes"] for e in entries),
                "shards": entries,
            }
            rows[table] = manifest["tables"][table]["rows"]
            total_bytes += manifest["tables"][table]["bytes"]
        lease.renew()  # a build whose lease was collected must not publish
        publish(store, manifest, token)
        published = True
        lease.end("published")
        return BuildResult(
            version=version,
            parent=manifest["parent"],
            rows=rows,
            n_shards=shards,
            bytes=total_bytes,
            seconds=time.perf_counter() - t0,
        )
    except duckdb.Error as exc:
        raise CorruptData(
            f"could not build the index of {store.url}: {exc}", site=store.site
        ) from exc
    finally:
        con.close()
        scratch.remove(store, tmp)
        if not published:
            abandon(store, lease)
        elif scratch.in_store(store):
            store.prune_empty_dirs(layout.version_prefix(version))


def abandon(store: Store, lease: Lease) -> bool:
    """Remove what an unpublished build wrote (best effort) and end its lease as abandoned.

    Nothing is removed when the version turns out to be the published one (a publish whose
    answer was lost) or when the store cannot be read; ``atlas index gc`` removes it later.
    Returns whether the folder was cleaned.
    """
    lease.stop()
    try:
        pointer, _ = read_current(store)
        if pointer is not None and pointer.get("version") == lease.version:
            lease.end("published")
            return False
        prefix = layout.version_prefix(lease.version) + "/"
        keys = [k for k in store.list(prefix) if not k.endswith("/CLAIM")]
        store.delete_many(keys)
        lease.end("abandoned")
        store.prune_empty_dirs(prefix)
        return True
    except Exception:  # the failure being handled matters more; gc cleans up later
        return False


def _sql_text(path: Path) -> str:
    """A path as a DuckDB string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _upload_shard(
    store: Store,
    version: str,
    table: str,
    shard: int,
    shards: int,
    files: list[Path],
    con: Any,
    tmp: Path,
) -> dict[str, Any]:
    """Upload one shard (merging DuckDB's part files into one object) and describe it."""
    import pyarrow.parquet as pq

    if len(files) == 1:
        path = files[0]
    else:
        path = tmp / f"{table}-{shard}.parquet"
        if files:
            con.execute(
                f"COPY (SELECT * FROM read_parquet(?)) TO {_sql_text(path)} "
                "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 65536)",
                [[str(f) for f in files]],
            )
        else:  # an empty shard still exists, with the table's columns
            schema_src = next((tmp / table).rglob("*.parquet"), None)
            if schema_src is None:
                return _empty_entry(version, table, shard, shards)
            pq.write_table(pq.read_schema(schema_src).empty_table(), path)
    data = path.read_bytes()
    key = layout.shard_key(version, table, shard, shards)
    store.write_bytes(key, data)
    return {
        "shard": shard,
        "key": key,
        "rows": pq.ParquetFile(io.BytesIO(data)).metadata.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "stats": _shard_stats(path, STATS_COLUMNS[table]),
    }


def _empty_entry(version: str, table: str, shard: int, shards: int) -> dict[str, Any]:
    return {
        "shard": shard,
        "key": None,
        "rows": 0,
        "bytes": 0,
        "sha256": None,
        "stats": {},
    }
