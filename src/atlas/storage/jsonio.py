"""Reading JSON metadata objects: one place that turns bad JSON into :class:`CorruptData`."""

from __future__ import annotations

import json
from typing import Any

from atlas.errors import CorruptData

__all__ = ["parse_json_object"]


def parse_json_object(
    raw: bytes | str, what: str, *, site: str | None = None, location: str | None = None
) -> dict[str, Any]:
    """The JSON object in ``raw``; :class:`CorruptData` naming ``what`` if it is not one.

    Parameters
    ----------
    raw:
        The bytes (or text) of the document.
    what:
        What the document is and where it lives, for the message
        (``"index manifest _index/v3/manifest.json in s3://b/p"``).
    site, location:
        Carried by the error (see :class:`atlas.errors.AtlasError`).

    Raises
    ------
    CorruptData
        ``raw`` is not valid JSON, or its top level is not an object.
    """
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CorruptData(f"{what} is not valid JSON", site=site, location=location) from exc
    if not isinstance(doc, dict):
        raise CorruptData(
            f"{what} is not a JSON object (found {type(doc).__name__})",
            site=site,
            location=location,
        )
    return doc
