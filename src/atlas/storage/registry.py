"""Backends by URL scheme, with install hints (as fsspec and zarr do it).

A scheme maps to a backend class named by its dotted path, imported on first use, and to the
optional packages it needs with the pip extra that installs them. Asking for an unknown
scheme, or for one whose packages are missing, raises a :mod:`atlas.errors` error that says
what to install; importing :mod:`atlas.storage` never imports an optional package.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atlas.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from atlas.storage.base import Backend

__all__ = ["BackendEntry", "backend_class", "register_backend", "registered_schemes"]


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: where its class lives and what it needs installed."""

    scheme: str
    target: str
    requires: tuple[str, ...] = ()
    extra: str | None = None


_LOCK = threading.Lock()
_ENTRIES: dict[str, BackendEntry] = {
    "file": BackendEntry("file", "atlas.storage.backends.local:LocalBackend"),
    "memory": BackendEntry("memory", "atlas.storage.backends.memory:MemoryBackend"),
    "s3": BackendEntry("s3", "atlas.storage.backends.s3:S3Backend", ("s3fs",), "s3"),
}
_CLASSES: dict[str, type[Backend]] = {}


def register_backend(
    scheme: str, target: str, *, requires: tuple[str, ...] = (), extra: str | None = None
) -> None:
    """Register (or replace) the backend for ``scheme``.

    Parameters
    ----------
    scheme:
        The URL scheme, lower case (``gs``).
    target:
        ``"package.module:ClassName"`` of a :class:`~atlas.storage.base.Backend` subclass.
    requires:
        Importable names of the optional packages it needs (checked before the import).
    extra:
        The pip extra of ``atlas-imaging`` that installs them, for the error message.

    Notes
    -----
    :func:`atlas.storage.parse_url` parses the schemes it knows; a new scheme also needs a
    parser there (see ``docs/storage.md``, "Adding a backend").
    """
    if ":" not in target:
        raise InvalidInput(f"backend target must be 'module:Class', got {target!r}")
    with _LOCK:
        _ENTRIES[scheme] = BackendEntry(scheme, target, tuple(requires), extra)
        _CLASSES.pop(scheme, None)


def registered_schemes() -> list[str]:
    """The schemes with a registered backend, sorted."""
    with _LOCK:
        return sorted(_ENTRIES)


def backend_class(scheme: str) -> type[Backend]:
    """The backend class for ``scheme`` (imported on first use).

    Raises
    ------
    InvalidInput
        No backend is registered for ``scheme``.
    ConfigError
        The backend's optional packages are not installed (the message names the pip extra).
    """
    with _LOCK:
        found = _CLASSES.get(scheme)
        entry = _ENTRIES.get(scheme)
    if found is not None:
        return found
    if entry is None:
        raise InvalidInput(
            f"no storage backend for scheme {scheme!r}; known: {', '.join(registered_schemes())}"
        )
    missing = [name for name in entry.requires if importlib.util.find_spec(name) is None]
    if missing:
        how = f"pip install 'atlas-imaging[{entry.extra}]'" if entry.extra else "pip install "
        how += "" if entry.extra else " ".join(missing)
        raise ConfigError(
            f"{scheme}:// stores need {', '.join(missing)}, which is not installed: {how}"
        )
    module_name, _, class_name = entry.target.partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    with _LOCK:
        _CLASSES[scheme] = cls
    return cls
