"""Library warnings and log records seen while reading originals, without their text.

pydicom, highdicom and nibabel quote original values in their warnings and log messages
(``Invalid value for VR UI: '1.2.…'``, a name that is too long, a date). Ingest must never let
those values reach a terminal, a worker log, a report or an error message, so in every process
that reads originals (the CLI's, and each dask worker) :func:`install` sets up, once:

- a replacement of :func:`warnings.showwarning` that never prints or formats a warning raised
  while a :func:`collect` block is active on the thread, nor any warning raised inside one of the
  libraries that see raw data (:data:`RAW_DATA_PACKAGES`), wherever it happens: each is turned
  into a fixed, value-free note (``"pydicom: invalid value for VR UI (value not shown)"``) and
  counted. Other warnings are shown as before;
- a counting handler on the ``pydicom``, ``highdicom`` and ``nibabel`` loggers, with
  propagation to the root logger turned off, so their records never reach a handler that
  prints them (the dask worker's stderr handler, a user's ``basicConfig``). Records of level
  ERROR and above are counted as notes; lower ones are dropped (pydicom's WARNING records
  repeat the warning it also raises, which is counted once, as a warning);
- an ``always`` warnings filter for those libraries, so repeated warnings are counted, not
  swallowed by Python's once-per-location rule.

The hook is process-wide and installed once; attribution is per thread (the warning machinery
calls the hook on the thread that raised the warning), so concurrent reads on several threads
each get their own counts. :func:`warnings.catch_warnings` is not used: it swaps process-wide
state and is not thread-safe.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["RAW_DATA_PACKAGES", "collect", "describe", "install", "take_unattributed"]

#: libraries that see original values (their warnings and logs are never shown as text)
RAW_DATA_PACKAGES = ("pydicom", "highdicom", "nibabel", "pylibjpeg", "openjpeg", "libjpeg")

_LOGGERS = ("pydicom", "highdicom", "nibabel")
_VR = r"([A-Z]{2})"
#: known message shapes -> a fixed description; only a two-letter VR is ever taken from the text
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"Invalid value for VR {_VR}"), "invalid value for VR {0}"),
    (re.compile(rf"not valid for elements with a VR of {_VR}"), "invalid value for VR {0}"),
    (re.compile(rf"The value length \(\d+\) exceeds .* for VR {_VR}"), "value too long for VR {0}"),
    (re.compile(r"The PN component length"), "person name component too long"),
    (re.compile(r"number of PN components"), "too many person name components"),
    (re.compile(rf"A value of type '\w+' cannot be assigned to a tag with VR {_VR}"),
     "value of the wrong type for VR {0}"),
)  # fmt: skip

_lock = threading.Lock()
_local = threading.local()
_unattributed: Counter[str] = Counter()
_original_showwarning: Any = None


def _package(filename: str, module: str = "") -> str | None:
    """The raw-data library a warning location or logger name belongs to, if any."""
    text = filename.replace("\\", "/")
    for name in RAW_DATA_PACKAGES:
        if f"/{name}/" in text or module == name or module.startswith(name + "."):
            return name
    return None


def describe(message: Warning | str, category: type[Warning], package: str | None) -> str:
    """A fixed, value-free description of a warning (never any of its text but a VR name)."""
    text = str(message)
    where = package or "library"
    for pattern, template in _KNOWN:
        match = pattern.search(text)
        if match:
            return f"{where}: {template.format(*match.groups())} (value not shown)"
    return f"{where}: {category.__name__} (message not shown)"


def _active() -> list[Counter[str]]:
    stack: list[Counter[str]] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _note(description: str) -> None:
    stack = _active()
    if stack:
        stack[-1][description] += 1
    else:
        with _lock:
            _unattributed[description] += 1


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    package = _package(filename)
    if package is None and not _active():
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    _note(describe(message, category, package))


class _NoteHandler(logging.Handler):
    """Counts records of the raw-data libraries; never formats their message."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            package = _package("", record.name) or record.name.split(".")[0]
            _note(f"{package}: {record.levelname.lower()} logged (message not shown)")


def install() -> None:
    """Install the redacting warning hook and log handlers in this process (idempotent)."""
    global _original_showwarning
    with _lock:
        if warnings.showwarning is not _showwarning:  # first call, or a block restored it
            _original_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
            for name in RAW_DATA_PACKAGES:
                warnings.filterwarnings("always", module=rf"{name}(\.|$)")
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
                logger.addHandler(_NoteHandler())
            logger.propagate = False


@contextmanager
def collect() -> Iterator[Counter[str]]:
    """Count, value-free, the warnings and library errors raised on this thread in the block.

    Installs the hook first (see :func:`install`; it is installed again if a
    :class:`warnings.catch_warnings` block restored the previous one). Yields a
    :class:`~collections.Counter` of fixed descriptions, filled as warnings are raised (nested
    blocks count into the innermost).
    """
    install()
    notes: Counter[str] = Counter()
    stack = _active()
    stack.append(notes)
    try:
        yield notes
    finally:
        del stack[next(i for i, c in enumerate(stack) if c is notes)]


def take_unattributed() -> Counter[str]:
    """The notes raised in this process outside any :func:`collect` block (and forget them)."""
    with _lock:
        out = Counter(_unattributed)
        _unattributed.clear()
    return out
