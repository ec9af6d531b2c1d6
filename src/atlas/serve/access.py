"""The grant of a request and the audit record it leaves.

:func:`require_grant` is the FastAPI dependency of every protected route: it hands the
``Authorization`` header to the app's authenticator and keeps the :class:`Grant` on
``request.state.grant`` for the audit middleware. :func:`audit_record` turns a finished
request (its status, grant and what the route said it served on ``request.state``) into the
fields of one audit record (DICOM PS3.15 A.5 vocabulary: event, action, outcome).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from atlas.serve.audit import AuditAction, AuditEvent, AuditOutcome
from atlas.serve.grants import Grant

__all__ = ["AuditFields", "Authenticator", "audit_record", "require_grant"]


class Authenticator(Protocol):
    """What the app needs from an authenticator (:class:`atlas.serve.auth.Authenticator`)."""

    def authenticate(self, authorization: str | None, signed_token: str | None) -> Grant:
        """The grant of a request; raises :class:`~atlas.errors.Unauthorized`."""
        ...


def require_grant(request: Request) -> Grant:
    """The caller's grant from ``Authorization: Bearer ...`` (401 without a valid one)."""
    auth: Authenticator = request.app.state.authenticator
    grant = auth.authenticate(request.headers.get("authorization"), None)
    request.state.grant = grant
    return grant


@dataclass(frozen=True)
class AuditFields:
    """One audit record before it is written.

    ``event`` is an :class:`~atlas.serve.audit.AuditEvent` name, ``action`` an
    :class:`~atlas.serve.audit.AuditAction` code (C, R, U, D, E), ``outcome`` the
    :class:`~atlas.serve.audit.AuditOutcome` code (0, 4, 8).
    """

    event: str
    action: str
    outcome: int
    subject: str | None
    token_id: str | None
    client: str | None
    purpose: str | None
    route: str
    object_id: str | None
    site: str | None
    tiles: int
    nbytes: int

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`AuditTrail.append` (vocabularies as their enums)."""
        return {
            "event": AuditEvent[self.event],
            "action": AuditAction(self.action),
            "outcome": AuditOutcome(self.outcome),
            "subject": self.subject,
            "token_id": self.token_id,
            "client": self.client,
            "purpose": self.purpose,
            "route": self.route,
            "object_id": self.object_id,
            "site": self.site,
            "tiles": self.tiles,
            "nbytes": self.nbytes,
        }


def _route_of(request: Request) -> str:
    """The route template (``/api/series/{series_id}``), never the raw path with its values."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        # a signed URL's token lies in its path: the template names it, the value never
        return f"{request.method} {path}"
    return f"{request.method} (no route)"


#: the event of a request whose route did not say (it failed before its handler ran)
_QUERY_ROUTES = ("/api/series", "/api/collections")
_ACCESS_PREFIXES = ("/api/series/", "/zarr/", "/signed/")


def _event_of_route(request: Request) -> str:
    path = getattr(request.scope.get("route"), "path", None)
    if path in _QUERY_ROUTES:
        return "QUERY"
    if isinstance(path, str) and path.startswith(_ACCESS_PREFIXES) and request.method != "POST":
        return "INSTANCES_ACCESSED"
    return "APPLICATION_ACTIVITY"


def audit_record(request: Request, status: int, nbytes: int) -> AuditFields:
    """The audit fields of a finished request.

    Parameters
    ----------
    request
        The request; routes set ``request.state.audit_event`` (``"QUERY"`` or
        ``"INSTANCES_ACCESSED"``), ``audit_object`` (a series pseudonym), ``audit_site`` and
        ``audit_tiles``; the grant is ``request.state.grant`` once authenticated.
    status
        The response status.
    nbytes
        Body bytes sent.
    """
    state = request.state
    grant: Grant | None = getattr(state, "grant", None)
    if status in (401, 403):
        event = "SECURITY_ALERT"
    else:
        event = str(getattr(state, "audit_event", None) or _event_of_route(request))
    if event == "QUERY":
        action = "E"
    elif request.method == "POST":
        action = "C"
    elif request.method in ("PUT", "PATCH"):
        action = "U"
    elif request.method == "DELETE":
        action = "D"
    else:
        action = "R"
    outcome = int(AuditOutcome.from_status(status))
    client = request.client.host if request.client else None
    return AuditFields(
        event=event,
        action=action,
        outcome=outcome,
        subject=grant.subject if grant else None,
        token_id=grant.token_id if grant else None,
        client=client,
        purpose=grant.purpose if grant else None,
        route=_route_of(request),
        object_id=getattr(state, "audit_object", None),
        site=getattr(state, "audit_site", None),
        tiles=int(getattr(state, "audit_tiles", 0) or 0),
        nbytes=int(nbytes) if status < 400 else 0,
    )
