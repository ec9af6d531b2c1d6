"""The catalog API: ``/api/collections``, ``/api/series`` (search, paged) and one series' metadata.

Every query runs under the caller's purpose (subjects without that consent are not in the
catalog the context opens for it) and is restricted to the grant's sites and collections in
the query itself, so a row outside the grant is never read into the response.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from atlas.index.catalog import Query as CatalogQuery
from atlas.serve.access import require_grant
from atlas.serve.context import SeriesEntry, ServeContext
from atlas.serve.grants import Grant
from atlas.serve.metadata import describe_series
from atlas.serve.paging import ORDER, Cursor, after, filter_digest, sort_key

__all__ = ["catalog_router", "series_summary"]

MAX_LIMIT = 500
MAX_Q = 4096


class SeriesSummary(BaseModel):
    """One readable volume of a series, as searches list it (pseudonymous ids only)."""

    series_id: str
    volume: int
    site: str
    collection: str
    subject_id: str
    modality: str | None = None
    body_part: str | None = None
    size: list[int] = Field(description="level-0 shape z, y, x")
    spacing: list[float] = Field(description="level-0 voxel size z, y, x in mm")
    levels: int
    labels: list[str]
    regularly_spaced: bool | None = None


class SeriesPage(BaseModel):
    """A page of a series search."""

    items: list[SeriesSummary]
    next: str | None = Field(None, description="cursor of the next page; null on the last")
    missing_sites: list[str] = Field(
        default_factory=list, description="sites of the grant that did not answer (partial)"
    )


class CollectionSummary(BaseModel):
    """A collection: the sites holding it and how many series and subjects it has."""

    collection: str
    sites: list[str]
    series: int
    subjects: int


class Collections(BaseModel):
    """Every collection the caller may see."""

    collections: list[CollectionSummary]
    missing_sites: list[str] = Field(default_factory=list)


def series_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The :class:`SeriesSummary` fields of a catalog row."""
    return {
        "series_id": str(row["series_id"]),
        "volume": int(row["volume"]),
        "site": str(row["site"]),
        "collection": str(row["collection"]),
        "subject_id": str(row["subject_id"]),
        "modality": row.get("modality"),
        "body_part": row.get("body_part"),
        "size": [int(row["size_z"]), int(row["size_y"]), int(row["size_x"])],
        "spacing": [float(row["spacing_z"]), float(row["spacing_y"]), float(row["spacing_x"])],
        "levels": int(row["levels"]),
        "labels": [str(x) for x in (row.get("labels") or [])],
        "regularly_spaced": row.get("regularly_spaced"),
    }


def scoped(ctx: ServeContext, grant: Grant) -> CatalogQuery | None:
    """The series table under the grant's purpose, restricted to its sites and collections.

    ``None`` when the grant covers no site of this server.
    """
    query = ctx.atlas(grant.purpose).series
    sites = ctx.sites_for(grant)
    if grant.path_prefix is not None:
        sites = [s for s in sites if s == grant.path_prefix[0]]
    if not sites:
        return None
    query = query.where(site=sites)
    if grant.collections is not None:
        if not grant.collections:
            return None
        query = query.where(collection=sorted(grant.collections))
    if grant.path_prefix is not None:
        query = query.where(image_path=grant.path_prefix[1])
    return query


def _missing(ctx: ServeContext, grant: Grant, missing: dict[str, str]) -> list[str]:
    mine = set(ctx.sites_for(grant))
    return sorted(s for s in missing if s in mine)


def catalog_router(ctx: ServeContext) -> APIRouter:
    """The catalog routes (each needs a grant)."""
    router = APIRouter(prefix="/api", tags=["catalog"])

    @router.get("/collections", response_model=Collections)
    def collections(request: Request, grant: Grant = Depends(require_grant)) -> dict[str, Any]:
        """Collections the caller may see, with their sites and series and subject counts."""
        request.state.audit_event = "QUERY"
        query = scoped(ctx, grant)
        if query is None:
            return {"collections": [], "missing_sites": []}
        result = query.aggregate(
            "collection, count(DISTINCT series_id) AS n_series, "
            "count(DISTINCT subject_id) AS n_subjects",
            "GROUP BY collection",
        )
        merged: dict[str, dict[str, Any]] = {}
        for site, table in sorted(result.value.items()):
            for row in table.to_pylist():
                c = merged.setdefault(
                    row["collection"],
                    {"collection": row["collection"], "sites": [], "series": 0, "subjects": 0},
                )
                c["sites"].append(site)
                # pseudonyms are keyed per site: a subject or series never spans two sites
                c["series"] += int(row["n_series"])
                c["subjects"] += int(row["n_subjects"])
        return {
            "collections": [merged[k] for k in sorted(merged)],
            "missing_sites": _missing(ctx, grant, result.missing_sites),
        }

    @router.get("/series", response_model=SeriesPage)
    def search(
        request: Request,
        q: str | None = Query(
            None,
            max_length=MAX_Q,
            description='filter in the language of `atlas query`, e.g. `modality == "CT"`',
        ),
        limit: int = Query(50, ge=1, le=MAX_LIMIT, description="items per page"),
        cursor: str | None = Query(
            None, max_length=1024, description="the `next` of the previous page"
        ),
        grant: Grant = Depends(require_grant),
    ) -> dict[str, Any]:
        """Search series (one item per volume), in a stable order, a page at a time."""
        request.state.audit_event = "QUERY"
        digest = filter_digest(q)
        start = Cursor.decode(cursor, digest) if cursor is not None else None
        query = scoped(ctx, grant)
        if query is None:
            return {"items": [], "next": None, "missing_sites": []}
        if q is not None and q.strip():
            query = query.where(q)
        if start is not None:
            query = replace(query, filters=(*query.filters, after(start)))
        order = ", ".join(ORDER)
        result = query.aggregate("* EXCLUDE (consent)", f"ORDER BY {order} LIMIT {limit + 1}")
        rows: list[dict[str, Any]] = []
        for table in result.value.values():
            rows.extend(table.to_pylist())
        rows.sort(key=sort_key)
        page = rows[:limit]
        nxt = Cursor.of_row(page[-1], digest).encode() if len(rows) > limit else None
        return {
            "items": [series_summary(r) for r in page],
            "next": nxt,
            "missing_sites": _missing(ctx, grant, result.missing_sites),
        }

    @router.get("/series/{series_id}")
    def series(
        request: Request,
        series_id: str = Path(..., min_length=1, max_length=128),
        volume: int = Query(0, ge=0, le=1_000_000),
        grant: Grant = Depends(require_grant),
    ) -> dict[str, Any]:
        """One series volume: its summary, de-identified header, geometry, levels and labels."""
        request.state.audit_event = "INSTANCES_ACCESSED"
        entry = ctx.series(grant, series_id, volume)
        request.state.audit_object = entry.series_id
        request.state.audit_site = entry.site
        return series_metadata(ctx, entry)

    return router


def series_metadata(ctx: ServeContext, entry: SeriesEntry) -> dict[str, Any]:
    """The metadata document of one series volume (``GET /api/series/{id}``)."""
    return describe_series(ctx, entry, series_summary(dict(entry.row)))
