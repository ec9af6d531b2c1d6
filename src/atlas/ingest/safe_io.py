"""Reading untrusted inputs: regular files only, inside the sources, with bounded memory.

Ingest reads whatever an operator points it at, and sources come from other institutions: a
file may be crafted. Every byte ingest reads goes through the functions here:

- :func:`open_regular` opens a path only when it is a regular file. It never blocks on a named
  pipe (the open is non-blocking, the type is checked on the open descriptor), never reads a
  device such as ``/dev/zero`` and refuses sockets and directories, whatever symlink leads there.
- :func:`is_within` tells whether a path, every symlink resolved, lies inside given roots.
  Discovery follows symlinks (to files and to folders alike) only inside the sources, and the
  files a DICOMDIR names only inside the DICOMDIR's own folder.
- :class:`ReadLimits` carries the configured limit (``max_image_bytes``): the largest decoded
  image, and (with a fixed allowance for headers) the largest input object — a file, a zip
  member, or the inflated body of a deflated DICOM file.
- :func:`open_member` and :func:`inflate` stream a zip member or a deflate stream into a spooled
  temporary file (at most :data:`SPOOL_BYTES` in memory, the rest on the local disk) and stop
  as soon as the data grows past the limit, so a small archive that inflates to gigabytes costs
  neither the memory nor the disk of its declared size.

Every refusal is an :class:`atlas.errors.InvalidInput` whose message is a quarantine reason.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from atlas.errors import InvalidInput

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "HEADER_ALLOWANCE",
    "SPOOL_BYTES",
    "LimitExceeded",
    "NotRegularFile",
    "ReadLimits",
    "format_size",
    "inflate",
    "is_within",
    "open_member",
    "open_regular",
    "parse_size",
    "spool",
]

#: default limit: a 1024 x 1024 x 1024 16-bit volume
DEFAULT_MAX_IMAGE_BYTES = 2 * 1024**3
#: what an input object may hold beyond its image (header, overlays, padding)
HEADER_ALLOWANCE = 16 * 1024**2
#: bytes of a spooled zip member or inflated stream kept in memory (the rest goes to disk)
SPOOL_BYTES = 8 * 1024**2
_CHUNK = 1024**2


class LimitExceeded(InvalidInput):
    """An input is larger than the configured limit (``--max-image-bytes``)."""


class NotRegularFile(InvalidInput):
    """A path is a named pipe, device, socket or directory: ingest reads regular files only."""


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it readable (``"2.0 GiB"``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str | int) -> int:
    """A byte count from ``"2GiB"``, ``"512MB"``, ``"64m"`` or ``"1000000"``.

    Decimal units (``KB``, ``MB``, ``GB``, ``TB``, or a bare ``k``/``m``/``g``/``t``) are powers
    of 1000, binary ones (``KiB``, ``MiB``, ``GiB``, ``TiB``) powers of 1024. Raises
    :class:`InvalidInput` for anything else, and for sizes that are not positive.
    """
    if isinstance(text, bool):
        raise InvalidInput(f"not a size: {text!r}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.fullmatch(str(text))
        if match is None:
            raise InvalidInput(f"not a size: {text!r} (use bytes or a unit, e.g. 512MB, 2GiB)")
        number, unit = float(match.group(1)), match.group(2).lower()
        binary = "i" in unit
        prefix = unit[:1] if unit[:1] in "kmgt" else ""
        factor = 1024 ** ("kmgt".index(prefix) + 1) if binary and prefix else _UNITS[prefix]
        if binary and not prefix:
            raise InvalidInput(f"not a size: {text!r} (use bytes or a unit, e.g. 512MB, 2GiB)")
        value = int(number * factor)
    if value <= 0:
        raise InvalidInput(f"a size must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class ReadLimits:
    """How much ingest reads and allocates for one input.

    ``max_image_bytes`` bounds the decoded size of one image (rows x columns x frames x
    samples x bytes per sample, summed over the slices of a volume) and, plus
    :data:`HEADER_ALLOWANCE`, the size of one input object (a file, a zip member, the inflated
    body of a deflated file). Inputs above it are quarantined before anything is allocated.
    """

    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    def __post_init__(self) -> None:
        value = self.max_image_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidInput(f"max_image_bytes must be a positive integer, got {value!r}")

    @property
    def max_object_bytes(self) -> int:
        """The largest input object read (image limit plus the header allowance)."""
        return self.max_image_bytes + HEADER_ALLOWANCE

    def check_image(self, declared: int, what: str = "image") -> None:
        """Raise :class:`LimitExceeded` when a decoded ``declared`` size is over the limit."""
        if declared > self.max_image_bytes:
            raise LimitExceeded(
                f"{what} would decode to {format_size(declared)}, over the limit of "
                f"{format_size(self.max_image_bytes)} (raise --max-image-bytes to accept it)"
            )

    def check_object(self, size: int, what: str = "file") -> None:
        """Raise :class:`LimitExceeded` when an input object of ``size`` bytes is too large."""
        if size > self.max_object_bytes:
            raise LimitExceeded(
                f"{what} holds more than {format_size(self.max_object_bytes)}, over the limit "
                "(raise --max-image-bytes to accept it)"
            )


# ----------------------------------------------------------------------------------------
# regular files only


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def not_regular_reason(mode: int) -> str:
    """The quarantine reason for a path of file mode ``mode`` that is not a regular file."""
    return f"not a regular file ({_kind(mode)}); only regular files are read"


def check_regular(path: str) -> os.stat_result:
    """``os.stat(path)`` (symlinks followed); :class:`NotRegularFile` unless a regular file."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(not_regular_reason(st.st_mode), location=path)
    return st


def open_regular(path: str, buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for reading only when it is a regular file (symlinks followed).

    The open itself does not block (``O_NONBLOCK``: a named pipe without a writer would
    otherwise wait forever) and the type is checked on the open descriptor, so a file swapped
    for a pipe or device after a check is still refused. Raises :class:`NotRegularFile` for
    anything else and ``OSError`` when the path cannot be opened.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(not_regular_reason(mode), location=path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def is_within(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` (every symlink resolved) is one of ``roots`` or lies below one.

    ``roots`` are resolved too; a path that cannot be resolved is not within.
    """
    try:
        real = os.path.realpath(path, strict=True)
    except (OSError, ValueError):
        return False
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


# ----------------------------------------------------------------------------------------
# capped streaming


def _new_spool() -> Any:
    # closed by the caller (or on error here): a context manager would close it too early
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, prefix="atlas-ingest-")


def _spool_chunks(chunks: Iterable[bytes], cap: int, too_big: str) -> IO[bytes]:
    """Write ``chunks`` into a spooled temporary file, rewound.

    Raises :class:`LimitExceeded` with the message ``too_big`` as soon as more than ``cap`` bytes
    come (the file is closed on error).
    """
    out = _new_spool()
    try:
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if total > cap:
                raise LimitExceeded(
                    f"{too_big}, over the limit (raise --max-image-bytes to accept it)"
                )
            out.write(chunk)
        out.seek(0)
        return cast(IO[bytes], out)
    except BaseException:
        out.close()
        raise


def spool(src: IO[bytes], cap: int, what: str) -> IO[bytes]:
    """Copy ``src`` into a spooled temporary file, at most ``cap`` bytes, rewound.

    Raises :class:`LimitExceeded` (naming ``what``) as soon as more than ``cap`` bytes come.
    """
    chunks = iter(lambda: src.read(_CHUNK), b"")
    return _spool_chunks(chunks, cap, f"{what} holds more than {format_size(cap)}")


def open_member(zf: zipfile.ZipFile, name: str, limits: ReadLimits) -> IO[bytes]:
    """A zip member as a seekable file, streamed with the object limit.

    The member's declared size is checked first; the copy stops at the limit whatever the
    archive claims. Raises :class:`LimitExceeded`, or what :mod:`zipfile` raises for damaged,
    encrypted or unsupported members.
    """
    info = zf.getinfo(name)
    limits.check_object(info.file_size, "zip member")
    with zf.open(info) as src:
        return spool(src, limits.max_object_bytes, "zip member")


def _inflated(src: IO[bytes]) -> Iterator[bytes]:
    """The pieces of the raw deflate stream ``src``, at most ``_CHUNK`` bytes each."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = b""
    while True:
        if not pending:
            pending = src.read(_CHUNK)
            if not pending:
                break
        yield inflater.decompress(pending, _CHUNK)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    yield inflater.flush()


def inflate(src: IO[bytes], limits: ReadLimits) -> IO[bytes]:
    """Inflate the raw deflate stream ``src`` into a seekable file, up to the object limit.

    The stream is RFC 1951, as in the Deflated Explicit VR Little Endian transfer syntax;
    inflating stops at the object limit.

    Raises :class:`LimitExceeded` past the limit and :class:`InvalidInput` for a corrupt stream.
    """
    cap = limits.max_object_bytes
    try:
        return _spool_chunks(
            _inflated(src), cap, f"deflated data inflates to more than {format_size(cap)}"
        )
    except zlib.error:
        raise InvalidInput("corrupt deflated data") from None
