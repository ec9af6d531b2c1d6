"""What a caller may see: a :class:`Grant`, made from a verified token or signed URL.

A grant names the sites and collections it covers (``None``: all of them), the purpose the
caller declared (a consent scope: only subjects who consented to it are visible) and, for a
signed URL, the one image path prefix it is limited to.
"""

from __future__ import annotations

from dataclasses import dataclass

from atlas.errors import Forbidden

__all__ = ["Grant"]


@dataclass(frozen=True)
class Grant:
    """The scope of one authenticated request.

    Attributes
    ----------
    subject
        Who the token was issued to (a user or service name; never a patient identifier).
    token_id
        The token's id (``jti``), as the audit trail and revocation list name it.
    purpose
        The consent scope the caller works under (e.g. ``"research"``, ``"ai-training"``).
    sites
        Sites the grant covers; ``None`` means every site.
    collections
        Collections the grant covers; ``None`` means every collection.
    expires
        Expiry, seconds since the epoch (UTC).
    path_prefix
        For a signed URL: ``(site, image path)`` it is limited to; ``None`` for a token.
    """

    subject: str
    token_id: str
    purpose: str
    sites: frozenset[str] | None = None
    collections: frozenset[str] | None = None
    expires: float = float("inf")
    path_prefix: tuple[str, str] | None = None

    def allows_site(self, site: str) -> bool:
        """Whether the grant covers ``site``."""
        return self.sites is None or site in self.sites

    def allows(self, site: str, collection: str, image_path: str | None = None) -> bool:
        """Whether the grant covers an image of ``collection`` at ``site`` (and its path)."""
        if not self.allows_site(site):
            return False
        if self.collections is not None and collection not in self.collections:
            return False
        if self.path_prefix is not None:
            p_site, p_path = self.path_prefix
            if site != p_site or image_path is None:
                return False
            path = image_path.strip("/")
            return path == p_path or path.startswith(p_path.rstrip("/") + "/")
        return True

    def check(self, site: str, collection: str, image_path: str | None = None) -> None:
        """Raise :class:`Forbidden` unless the grant covers the image (naming no data)."""
        if not self.allows(site, collection, image_path):
            raise Forbidden(
                f"token {self.token_id!r} does not cover this series (site {site!r}, "
                f"collection {collection!r})"
            )
