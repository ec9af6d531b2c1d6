"""``POST /api/signed-urls``: a short-lived URL of one image's raw Zarr, for header-less tools.

Neuroglancer and other viewers of raw Zarr cannot send an ``Authorization`` header; a signed
URL carries a token in its path instead, limited to one image's path prefix and a short
lifetime (:class:`atlas.serve.signed.SignedUrls`). The caller's grant must cover the series.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from atlas.serve.access import require_grant
from atlas.serve.context import ServeContext
from atlas.serve.grants import Grant
from atlas.serve.signed import MAX_SIGNED_TTL_S, SignedUrls

__all__ = ["SignedUrlRequest", "signed_router"]


class SignedUrlRequest(BaseModel):
    """Which series volume to sign a URL for, and for how long."""

    series_id: str = Field(..., min_length=1, max_length=128)
    volume: int = Field(0, ge=0, le=1_000_000)
    ttl_s: float | None = Field(
        None, gt=0, le=MAX_SIGNED_TTL_S, allow_inf_nan=False,
        description="lifetime in seconds (default: the server's signed_url_ttl_s)",
    )  # fmt: skip


class SignedUrlResponse(BaseModel):
    """A signed URL (relative to the server) and when it expires (seconds since the epoch)."""

    url: str
    expires: float


def signed_router(ctx: ServeContext, signed: SignedUrls) -> APIRouter:
    """The route issuing signed URLs with ``signed``."""
    router = APIRouter(prefix="/api", tags=["raw zarr"])

    @router.post("/signed-urls", response_model=SignedUrlResponse)
    def create_signed_url(
        request: Request, body: SignedUrlRequest, grant: Grant = Depends(require_grant)
    ) -> dict[str, Any]:
        """A signed URL of the series' OME-Zarr image (raw Zarr under ``/signed/...``)."""
        entry = ctx.series(grant, body.series_id, body.volume)
        request.state.audit_object = entry.series_id
        request.state.audit_site = entry.site
        url = signed.issue(grant, entry.site, entry.image_path, ttl_s=body.ttl_s)
        return {"url": url.url, "expires": url.expires}

    return router
