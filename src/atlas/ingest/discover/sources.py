"""Expanding what an operator points ingest at into the objects to examine.

Sources may mix directories (walked recursively, in name order), single files, DICOMDIR
files (their records are followed to the referenced files), zip archives (every member is
examined) and NIfTI files. Symlinks and DICOMDIR references are followed only inside the
sources (see :mod:`atlas.ingest.safe_io`); operating-system litter is skipped silently.
"""

from __future__ import annotations

import os
import posixpath
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from atlas.ingest.model import FileRef, Quarantined
from atlas.ingest.safe_io import ReadLimits, is_within, open_member

__all__ = [
    "ZipCache",
    "follow_dicomdir",
    "is_nifti_name",
    "resolve_in_dir",
    "source_key",
    "walk",
    "zip_members",
]

#: operating-system litter that is skipped silently (compared lower-case)
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def is_nifti_name(name: str) -> bool:
    """Whether a file or member name is a NIfTI file (``.nii`` or ``.nii.gz``)."""
    lower = name.lower()
    return lower.endswith(".nii") or lower.endswith(".nii.gz")


class ZipCache:
    """Open each archive once; reads of its members are serialised by a lock per archive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._archives: dict[str, tuple[zipfile.ZipFile, threading.Lock]] = {}

    def get(self, path: str) -> tuple[zipfile.ZipFile, threading.Lock]:
        """The open archive at ``path`` and the lock that serialises its reads."""
        with self._lock:
            entry = self._archives.get(path)
            if entry is None:
                entry = (zipfile.ZipFile(path), threading.Lock())
                self._archives[path] = entry
            return entry

    def open(self, ref: FileRef, limits: ReadLimits) -> IO[bytes]:
        """The member, streamed (capped by ``limits``) into a seekable spooled file."""
        assert ref.member is not None
        zf, lock = self.get(ref.path)
        with lock:
            return open_member(zf, ref.member, limits)

    def close(self) -> None:
        """Close every archive opened."""
        with self._lock:
            for zf, _ in self._archives.values():
                zf.close()
            self._archives.clear()


def _skip_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") or base.lower() in _JUNK_NAMES


_OUTSIDE = "symbolic link points outside the sources (not followed)"


def walk(root: Path, roots: list[str], refused: list[Quarantined]) -> Iterator[FileRef]:
    """Every file below ``root`` in name order.

    Symlinks, to files and to folders alike, are followed only when they resolve inside
    ``roots`` (others go to ``refused``); each folder is visited once, so link loops end.
    Non-regular files are yielded: reading refuses them.
    """
    visited: set[str] = set()

    def visit(folder: str) -> Iterator[FileRef]:
        real = os.path.realpath(folder)
        if real in visited:
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir and (entry.name.startswith(".") or entry.name == "__MACOSX"):
                continue
            if not is_dir and _skip_name(entry.name):
                continue
            if entry.is_symlink():
                if not os.path.exists(entry.path):
                    refused.append(Quarantined(FileRef(entry.path), "broken symbolic link"))
                    continue
                if not is_within(entry.path, roots):
                    refused.append(Quarantined(FileRef(entry.path), _OUTSIDE))
                    continue
            if is_dir:
                yield from visit(entry.path)
            else:
                yield FileRef(entry.path)

    yield from visit(str(root))


def source_key(ref: FileRef) -> tuple[str, str | None]:
    """What makes two references the same object (the real path and the member)."""
    return (os.path.realpath(ref.path), ref.member)


def resolve_in_dir(base: str, parts: tuple[str, ...]) -> str | None:
    """Join DICOMDIR file id ``parts`` below ``base``.

    Ids are upper case by the standard, so fall back to a case-insensitive match on
    case-sensitive file systems.
    """
    exact = os.path.join(base, *parts)
    if os.path.isfile(exact):
        return exact
    current = base
    for part in parts:
        try:
            entries = {e.lower(): e for e in os.listdir(current)}
        except OSError:
            return None
        match = entries.get(part.lower())
        if match is None:
            return None
        current = os.path.join(current, match)
    return current if os.path.isfile(current) else None


def zip_members(zf: zipfile.ZipFile) -> list[str]:
    """The members of an archive worth examining, in name order (no folders or litter)."""
    names = []
    for info in zf.infolist():
        if info.is_dir() or "__MACOSX/" in info.filename or _skip_name(info.filename):
            continue
        names.append(info.filename)
    return sorted(names)


_BAD_FILE_ID = "DICOMDIR references a file outside its own folder (refused)"


def _relative_file_id(parts: tuple[str, ...]) -> bool:
    """Whether File ID ``parts`` are relative components below the DICOMDIR (PS3.10 8.5).

    No ``.``/``..``, separators, drive letters or NUL.
    """
    return all(p not in (".", "..") and not any(c in p for c in "/\\:\x00") for p in parts)


def follow_dicomdir(
    ref: FileRef,
    file_ids: list[tuple[str, ...]],
    quarantined: list[Quarantined],
    zips: ZipCache,
    add: Callable[[FileRef], None],
) -> None:
    """Pass each file a DICOMDIR names to ``add``.

    Refused and missing ones go to ``quarantined``. A file id is resolved only inside the
    DICOMDIR's own folder (or the folder of its zip member).
    """
    for parts in file_ids:
        if not _relative_file_id(parts):
            quarantined.append(Quarantined(ref, _BAD_FILE_ID))
    file_ids = [parts for parts in file_ids if _relative_file_id(parts)]
    if ref.member is None:
        base = os.path.dirname(ref.path) or "."
        for parts in file_ids:
            resolved = resolve_in_dir(base, parts)
            if resolved is not None and not is_within(resolved, [base]):
                quarantined.append(Quarantined(ref, _BAD_FILE_ID))
            elif resolved is None:
                missing = FileRef(os.path.join(base, *parts))
                quarantined.append(Quarantined(missing, "file referenced by DICOMDIR is missing"))
            else:
                add(FileRef(resolved))
        return
    zf, lock = zips.get(ref.path)
    with lock:
        names = {n.lower(): n for n in zf.namelist()}
    base_member = posixpath.dirname(ref.member)
    for parts in file_ids:
        wanted = posixpath.join(base_member, *parts)
        name = names.get(wanted.lower())
        if name is None:
            quarantined.append(
                Quarantined(FileRef(ref.path, wanted), "file referenced by DICOMDIR is missing")
            )
        else:
            add(FileRef(ref.path, name))
