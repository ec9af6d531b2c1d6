"""Query the atlas: one site's index, or all sites at once (federation).

::

    atlas = open_atlas(settings, purpose="ai-training")
    q = atlas.images.where('modality == "CT" and label == "liver tumour"')
    q.count().value, q.to_arrow().table, q.sample(1000, seed=7).table

Every query carries a purpose; rows whose subject's consent does not cover it are never
returned. Filters go through :mod:`atlas.index.filter` (whitelisted columns, parameters only).
Each site is queried in parallel against the index version it is pinned to (its current one,
or the one a release names); a site that cannot be reached makes the result *partial*, listing
the missing sites — or an error with ``strict=True``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from atlas.errors import AtlasError, CorruptData, InvalidInput, NotFound, StoreUnavailable
from atlas.index import layout
from atlas.index.build import connect, duck_url, require_store
from atlas.index.filter import (
    And,
    Column,
    Compare,
    Contains,
    Expr,
    In,
    IsNull,
    Not,
    Or,
    parse,
    to_sql,
    where_kwargs,
)
from atlas.index.publish import load_manifest, read_current
from atlas.privacy import consent
from atlas.storage import Store
from atlas.storage.failures import translate_query_error

T = TypeVar("T")

_COMMON = {
    "site": "str", "collection": "str", "subject_id": "str", "study_id": "str",
    "series_id": "str", "volume": "int", "modality": "str",
}  # fmt: skip
_TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "series": {
        **_COMMON, "body_part": "str", "manufacturer": "str", "model": "str", "sex": "str",
        "age_years": "float", "acquisition_date": "str", "slice_thickness": "float",
        "spacing_z": "float", "spacing_y": "float", "spacing_x": "float", "size_z": "int",
        "size_y": "int", "size_x": "int", "channels": "int", "dtype": "str",
        "regularly_spaced": "bool", "tilt_deg": "float", "part": "int", "parts": "int",
        "levels": "int", "source_format": "str", "image_path": "str",
    },
    "images": {
        **_COMMON, "image_id": "str", "sop_instance_id": "str", "frame": "int",
        "z_index": "int", "position_mm": "float", "rows": "int", "columns": "int",
        "annotated": "bool", "body_part": "str", "sex": "str", "age_years": "float",
        "manufacturer": "str", "image_path": "str",
    },
    "annotations": {
        **_COMMON, "annotation_id": "str", "image_id": "str", "z_index": "int",
        "label_image": "str", "label_value": "int", "label_cleaned": "bool", "code_scheme": "str",
        "code_value": "str", "code_meaning": "str", "source": "str", "voxel_count": "int",
        "bbox_y0": "int", "bbox_x0": "int", "bbox_y1": "int", "bbox_x1": "int",
        "image_path": "str",
    },
}  # fmt: skip


def schema_of(table: str) -> dict[str, Column]:
    """The filterable columns of ``table`` (``label`` is the label name in every table)."""
    cols = {n: Column(n, t) for n, t in _TABLE_COLUMNS[table].items()}  # type: ignore[arg-type]
    if table == "annotations":
        cols["label"] = Column("label", "str", sql='"label_name"')
    else:
        cols["label"] = Column("label", "list[str]", sql='"labels"')
    return cols


def _label_as_scalar(schema: dict[str, Column]) -> dict[str, Column]:
    label = schema["label"]
    if label.type != "list[str]":
        return schema
    return {**schema, "label": Column("label", "str", sql=label.sql)}


def _labels_to_contains(expr: Expr, schema: dict[str, Column]) -> Expr:
    """Rewrite comparisons on a list-of-labels column into membership tests."""
    if schema["label"].type != "list[str]":
        return expr
    if isinstance(expr, And | Or):
        return type(expr)(tuple(_labels_to_contains(e, schema) for e in expr.items))
    if isinstance(expr, Not):
        return Not(_labels_to_contains(expr.item, schema))
    if getattr(expr, "column", None) != "label":
        return expr
    if isinstance(expr, Compare) and expr.op in ("==", "!="):
        found: Expr = Contains("label", str(expr.value))
        return found if expr.op == "==" else Not(found)
    if isinstance(expr, In):
        any_of: Expr = Or(tuple(Contains("label", str(v)) for v in expr.values))
        return Not(any_of) if expr.negated else any_of
    if isinstance(expr, Contains | IsNull):
        return expr
    raise InvalidInput(
        "label supports ==, !=, in, not in and contains (rows may carry several labels)"
    )


_VERIFIED: set[tuple[str, str]] = set()
_VERIFY_LOCK = threading.Lock()


@dataclass
class SiteIndex:
    """One site's index, pinned to one version."""

    name: str
    store: Store
    version: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, name: str, store: Store, version: str | None = None) -> SiteIndex:
        """Open the current version (or ``version``), checking the manifest's checksum."""
        require_store(store)
        pointer, _ = read_current(store)
        if pointer is None:
            raise NotFound(
                f"site {name!r} has no index yet; run `atlas index build`",
                site=name,
                location=store.url,
            )
        if version is None or version == pointer["version"]:
            manifest = load_manifest(store, pointer["version"], pointer.get("manifest_sha256"))
            return cls(name, store, pointer["version"], manifest)
        return cls(name, store, version, load_manifest(store, version))

    def shard_urls(self, table: str, shards: Sequence[int] | None = None) -> list[str]:
        """DuckDB URLs of the table's shards (checked against the manifest's SHA-256 once)."""
        entries = self.manifest["tables"][table]["shards"]
        chosen = [e for e in entries if e["key"] and (shards is None or e["shard"] in shards)]
        for entry in chosen:
            self._verify(entry)
        return [duck_url(self.store, e["key"]) for e in chosen]

    def _verify(self, entry: Mapping[str, Any]) -> None:
        marker = (self.store.url + "/" + entry["key"], entry["sha256"])
        if marker in _VERIFIED:
            return
        data = self.store.read_bytes(entry["key"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptData(
                f"index shard {entry['key']} of site {self.name!r} fails its checksum; "
                f"version {self.version} is damaged — query an older version "
                "(version=...) or rebuild the index",
                site=self.name,
                location=self.store.url,
            )
        with _VERIFY_LOCK:
            _VERIFIED.add(marker)


@dataclass(frozen=True)
class Result(Generic[T]):
    """A federated result: the value, plus the sites that could not answer."""

    value: T
    missing_sites: dict[str, str] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        """True when some sites did not answer."""
        return bool(self.missing_sites)


@dataclass(frozen=True)
class Query:
    """A lazy query on one table of the atlas; each method runs it."""

    atlas: Atlas
    table: str
    filters: tuple[Expr, ...] = ()
    limit_rows: int | None = None
    columns: tuple[str, ...] | None = None

    def where(self, text: str | None = None, **equals: Any) -> Query:
        """Add a filter: an expression string and/or ``column=value`` keywords.

        ``label == "x"`` / ``label in [...]`` / ``label != "x"`` mean "has (none of) these
        labels" on tables whose rows carry a list of labels.
        """
        schema = schema_of(self.table)
        scalar = _label_as_scalar(schema)
        added: list[Expr] = []
        if text:
            added.append(_labels_to_contains(parse(text, scalar), schema))
        if equals:
            added.append(_labels_to_contains(where_kwargs(scalar, **equals), schema))
        return replace(self, filters=self.filters + tuple(added))

    def intersecting(
        self,
        *,
        z: tuple[int, int] | None = None,
        y: tuple[int, int] | None = None,
        x: tuple[int, int] | None = None,
    ) -> Query:
        """Annotations whose bounding box intersects a region (level-0 voxels, ends exclusive).

        Combine with ``where(series_id=...)`` to look inside one volume.
        """
        if self.table != "annotations":
            raise InvalidInput("intersecting() applies to the annotations table")
        items: list[Expr] = []
        for axis, bounds in (("z", z), ("y", y), ("x", x)):
            if bounds is None:
                continue
            lo, hi = (int(b) for b in bounds)
            if hi <= lo:
                raise InvalidInput(f"empty {axis} range {bounds}: the end must exceed the start")
            if axis == "z":
                items += [Compare("z_index", ">=", lo), Compare("z_index", "<", hi)]
            else:
                items += [Compare(f"bbox_{axis}1", ">", lo), Compare(f"bbox_{axis}0", "<", hi)]
        if not items:
            raise InvalidInput("give at least one of z=, y=, x=")
        return replace(self, filters=(*self.filters, And(tuple(items))))

    def select(self, *columns: str) -> Query:
        """Return only these columns (whitelisted names) from ``to_arrow``/``iter_batches``."""
        known = set(_TABLE_COLUMNS[self.table]) | {"labels", "label_name"}
        unknown = [c for c in columns if c not in known]
        if unknown or not columns:
            raise InvalidInput(
                f"unknown column(s) {unknown} for {self.table}; known: {sorted(known)}"
            )
        return replace(self, columns=tuple(columns))

    def _projection(self) -> str:
        if self.columns is None:
            return "* EXCLUDE (consent)"
        return ", ".join(f'"{c}"' for c in self.columns)

    def limit(self, n: int) -> Query:
        """At most ``n`` rows from ``to_arrow``/``iter_batches``."""
        if n < 0:
            raise InvalidInput("limit must be >= 0")
        return replace(self, limit_rows=n)

    # -- SQL ------------------------------------------------------------------------------
    def _sql(self, site: SiteIndex, select: str, tail: str = "") -> tuple[str, list[Any]]:
        urls = site.shard_urls(self.table)
        if not urls:
            return "", []
        schema = schema_of(self.table)
        clauses = ["list_contains(consent, ?)"]
        params: list[Any] = [self.atlas.purpose]
        for f in self.filters:
            sql, p = to_sql(f, schema)
            clauses.append(f"({sql})")
            params.extend(p)
        listing = ", ".join("'" + u.replace("'", "''") + "'" for u in urls)
        return (
            f"SELECT {select} FROM read_parquet([{listing}]) WHERE {' AND '.join(clauses)} {tail}",
            params,
        )

    # -- execution ------------------------------------------------------------------------
    def count(self) -> Result[int]:
        """How many rows match, over all sites."""

        def one(site: SiteIndex) -> int:
            sql, params = self._sql(site, "count(*)")
            if not sql:
                return 0
            return int(self.atlas._con(site).execute(sql, params).fetchall()[0][0])

        parts = self.atlas._fan_out(one)
        return Result(sum(parts.value.values()), parts.missing_sites)

    def to_arrow(self) -> Result[Any]:
        """All matching rows as one pyarrow Table (rows carry their ``site``)."""
        import pyarrow as pa

        tail = f"LIMIT {int(self.limit_rows)}" if self.limit_rows is not None else ""

        def one(site: SiteIndex) -> Any:
            sql, params = self._sql(site, self._projection(), tail)
            if not sql:
                return None
            return self.atlas._con(site).sql(sql, params=params).to_arrow_table()

        parts = self.atlas._fan_out(one)
        tables = [t for t in parts.value.values() if t is not None and t.num_rows]
        table = pa.concat_tables(tables, promote_options="default") if tables else None
        if table is not None and self.limit_rows is not None:
            table = table.slice(0, self.limit_rows)
        return Result(table, parts.missing_sites)

    def sample(self, n: int, seed: int = 0) -> Result[Any]:
        """``n`` rows drawn uniformly without replacement, reproducibly for a given seed."""
        import pyarrow as pa

        if n < 0:
            raise InvalidInput("sample size must be >= 0")
        counts = self.count()
        total = counts.value
        if total == 0 or n == 0:
            return Result(None, counts.missing_sites)
        # rank every matching row by md5(id || seed) - stable across machines and DuckDB
        # versions - and keep the n smallest: the same seed gives the same sample months later
        key = f"{seed}"

        def one(site: SiteIndex) -> Any:
            id_col = {"series": "series_id", "images": "image_id"}.get(self.table, "annotation_id")
            sql, params = self._sql(
                site,
                f"* EXCLUDE (consent), md5({id_col} || ?) AS _rank",
                f"ORDER BY _rank LIMIT {int(n)}",
            )
            if not sql:
                return None
            # the seed parameter belongs to the SELECT list, which comes first
            return self.atlas._con(site).sql(sql, params=[key, *params]).to_arrow_table()

        parts = self.atlas._fan_out(one)
        tables = [t for t in parts.value.values() if t is not None and t.num_rows]
        if not tables:
            return Result(None, parts.missing_sites)
        merged = pa.concat_tables(tables, promote_options="default").sort_by("_rank")
        return Result(merged.slice(0, n).drop_columns(["_rank"]), parts.missing_sites)

    def aggregate(self, select: str, tail: str = "") -> Result[dict[str, Any]]:
        """Run ``SELECT {select} ... {tail}`` on every site; site name → pyarrow Table.

        For aggregations written by Atlas's own code (``select`` and ``tail`` are SQL text, so
        never pass user input in them): the query's filters and its purpose's consent clause
        apply as in every other method, so rows outside consent never enter an aggregate.
        Sites are queried in parallel; unreachable ones are listed in ``missing_sites``.
        """

        def one(site: SiteIndex) -> Any:
            sql, params = self._sql(site, select, tail)
            if not sql:
                return None
            return self.atlas._con(site).sql(sql, params=params).to_arrow_table()

        parts = self.atlas._fan_out(one)
        found = {name: t for name, t in parts.value.items() if t is not None}
        return Result(found, parts.missing_sites)

    def iter_batches(self, batch_size: int = 65_536) -> Iterator[Any]:
        """Stream matching rows as pyarrow RecordBatches, one site after another."""
        remaining = self.limit_rows
        for site in self.atlas._reachable():
            sql, params = self._sql(site, self._projection())
            if not sql:
                continue
            reader = self.atlas._con(site).sql(sql, params=params).to_arrow_reader(batch_size)
            for batch in reader:
                if remaining is not None:
                    if remaining <= 0:
                        return
                    batch = batch.slice(0, remaining)
                    remaining -= batch.num_rows
                yield batch


class Atlas:
    """The federated catalog: one :class:`SiteIndex` per reachable site."""

    def __init__(
        self,
        sites: Mapping[str, SiteIndex],
        missing: Mapping[str, str],
        purpose: str,
        strict: bool = False,
    ) -> None:
        self.sites = dict(sites)
        self.missing = dict(missing)
        self.purpose = consent.check_purpose(purpose)
        self.strict = strict
        self._lock = threading.Lock()
        self._dbs: dict[str, Any] = {}

    @property
    def series(self) -> Query:
        """Query the series table (one row per volume)."""
        return Query(self, "series")

    @property
    def images(self) -> Query:
        """Query the images table (one row per slice or frame)."""
        return Query(self, "images")

    @property
    def annotations(self) -> Query:
        """Query the annotations table (one row per label per image)."""
        return Query(self, "annotations")

    @property
    def versions(self) -> dict[str, str]:
        """The index version each site is pinned to."""
        return {name: s.version for name, s in self.sites.items()}

    def _con(self, site: SiteIndex) -> Any:
        """A cursor on the site's DuckDB database (one per site, kept: caches stay warm)."""
        with self._lock:
            db = self._dbs.get(site.name)
        if db is None:
            # connect outside the lock: a federated query opens every site's database at once
            made = connect(site.store, threads=2)
            with self._lock:
                db = self._dbs.setdefault(site.name, made)
            if db is not made:
                made.close()
        return db.cursor()

    def _reachable(self) -> list[SiteIndex]:
        return [self.sites[n] for n in sorted(self.sites)]

    def _fan_out(self, fn: Any) -> Result[dict[str, Any]]:
        missing = dict(self.missing)
        values: dict[str, Any] = {}
        sites = self._reachable()
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(sites)))) as pool:
            futures = {s.name: pool.submit(_store_failures, fn, s) for s in sites}
            for name, fut in futures.items():
                try:
                    values[name] = fut.result()
                except (StoreUnavailable, CorruptData) as exc:
                    if self.strict:
                        raise
                    missing[name] = f"{type(exc).__name__}: {exc}"
        return Result(values, missing)

    # -- point lookups --------------------------------------------------------------------
    def get(self, table: str, **ids: str) -> Result[Any]:
        """Rows of ``table`` whose id columns equal ``ids`` (e.g. ``image_id=...``)."""
        if table not in layout.TABLES:
            raise InvalidInput(f"unknown table {table!r}; choose one of {list(layout.TABLES)}")
        return Query(self, table).where(**ids).to_arrow()


def _store_failures(fn: Any, site: SiteIndex) -> Any:
    """Run ``fn(site)``, mapping a store that did not answer to :class:`StoreUnavailable`.

    A query that failed because the site's store did not answer raises
    :class:`StoreUnavailable` (DuckDB wraps the filesystem's timeout in its own error).
    """
    try:
        return fn(site)
    except AtlasError:
        raise
    except Exception as exc:
        mapped = translate_query_error(exc, site.store.location)
        if mapped is None:
            raise
        raise mapped from exc


def open_atlas(
    stores: Mapping[str, Store],
    *,
    purpose: str,
    versions: Mapping[str, str] | None = None,
    strict: bool = False,
) -> Atlas:
    """Open every site's index in parallel; unreachable sites are listed as missing."""
    consent.check_purpose(purpose)
    versions = dict(versions or {})
    unknown = set(versions) - set(stores)
    if unknown:
        raise NotFound(f"unknown site(s) {sorted(unknown)}; known: {sorted(stores)}")
    opened: dict[str, SiteIndex] = {}
    missing: dict[str, str] = {}

    def one(name: str) -> SiteIndex:
        return SiteIndex.open(name, stores[name], versions.get(name))

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(stores)))) as pool:
        futures = {name: pool.submit(one, name) for name in stores}
        for name, fut in futures.items():
            try:
                opened[name] = fut.result()
            except AtlasError as exc:
                if strict:
                    raise
                missing[name] = f"{type(exc).__name__}: {exc}"
    return Atlas(opened, missing, purpose, strict)
