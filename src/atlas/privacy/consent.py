"""The consent registry of a site: which purposes each subject's data may serve.

Scopes (:class:`Scope`): ``research``, ``ai-training``, ``commercial``, ``data-altruism``. A
collection has default scopes (what its consent form covered); a subject may have their own,
which replace the default
(a withdrawal from AI training is ``set_subject(..., ["research"])``). The index builder copies
each subject's scopes into every row, and every query names its purpose: rows whose scopes do
not cover it are never returned. No registry entry means no scope — nothing is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from enum import StrEnum

from atlas.errors import InvalidInput, NotFound
from atlas.storage import Store

__all__ = [
    "CONSENT_PREFIX",
    "SCOPES",
    "Scope",
    "check_purpose",
    "check_scopes",
    "gaps",
    "load",
    "remove_subject",
    "scopes_of",
    "set_collection_default",
    "set_subject",
]


class Scope(StrEnum):
    """A purpose that data may serve: what a consent covers and what a query names."""

    RESEARCH = "research"
    AI_TRAINING = "ai-training"
    COMMERCIAL = "commercial"
    DATA_ALTRUISM = "data-altruism"


#: every scope's value, in the order of :class:`Scope`
SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)
CONSENT_PREFIX = "_consent"
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """Validated, de-duplicated, sorted scopes (their string values)."""
    out = sorted({str(s) for s in scopes})
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise InvalidInput(f"unknown consent scope(s) {unknown}; known: {list(SCOPES)}")
    return out


def check_purpose(purpose: str) -> str:
    """A query's purpose must be one of the scopes."""
    if purpose not in SCOPES:
        raise InvalidInput(f"unknown purpose {purpose!r}; choose one of {list(SCOPES)}")
    return str(purpose)


def _check_id(kind: str, value: str) -> str:
    if not _ID.match(value):
        raise InvalidInput(f"invalid {kind} id {value!r}")
    return value


def set_collection_default(store: Store, collection: str, scopes: Iterable[str]) -> None:
    """Set the default scopes of every subject of ``collection``."""
    body = {"collection": _check_id("collection", collection), "scopes": check_scopes(scopes)}
    store.write_bytes(f"{CONSENT_PREFIX}/collections/{collection}.json", json.dumps(body).encode())


def set_subject(store: Store, subject_id: str, scopes: Iterable[str]) -> None:
    """Set one subject's own scopes (replacing the collection default)."""
    body = {"subject_id": _check_id("subject", subject_id), "scopes": check_scopes(scopes)}
    store.write_bytes(f"{CONSENT_PREFIX}/subjects/{subject_id}.json", json.dumps(body).encode())


def remove_subject(store: Store, subject_id: str) -> None:
    """Forget a subject's entry (erasure)."""
    store.delete(f"{CONSENT_PREFIX}/subjects/{_check_id('subject', subject_id)}.json")


def load(store: Store) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(collection defaults, subject overrides)`` of the whole registry."""
    defaults: dict[str, list[str]] = {}
    overrides: dict[str, list[str]] = {}
    for key in store.list(f"{CONSENT_PREFIX}/"):
        if not key.endswith(".json"):
            continue
        try:
            body = json.loads(store.read_bytes(key))
        except NotFound:
            continue
        if "/collections/" in key:
            defaults[body["collection"]] = list(body["scopes"])
        elif "/subjects/" in key:
            overrides[body["subject_id"]] = list(body["scopes"])
    return defaults, overrides


def gaps(
    defaults: dict[str, list[str]], built: dict[str, list[str]], purpose: str
) -> tuple[list[str], list[str]]:
    """Collections of an index whose rows a ``purpose`` cannot see, and why.

    ``built`` is each collection's default scopes when the index version was built (its
    manifest's ``collections``), ``defaults`` the registry now. Returns ``(not recorded,
    recorded after the build)``: collections whose registry default does not cover the
    purpose, and those whose default covers it now but did not when the index was built.
    Only collection defaults are consulted, never subjects (no count or subject is revealed).
    """
    missing = sorted(c for c in built if purpose not in defaults.get(c, []))
    stale = sorted(c for c in built if purpose in defaults.get(c, []) and purpose not in built[c])
    return missing, stale


def scopes_of(
    subject_id: str,
    collection: str,
    defaults: dict[str, list[str]],
    overrides: dict[str, list[str]],
) -> list[str]:
    """A subject's effective scopes."""
    if subject_id in overrides:
        return overrides[subject_id]
    return defaults.get(collection, [])
