"""HTTP ``Range`` requests (RFC 9110 §14): parse a ``Range`` header and frame the answer.

:func:`plan_ranges` turns a ``Range`` header and the object's size into a :class:`RangePlan`:

- ``FULL``: no header, another unit than ``bytes``, or a header that does not follow the
  grammar (a server ignores those and sends the whole object with ``200``, §14.2);
- ``PARTIAL``: the satisfiable ranges, sorted, overlapping and adjacent ones merged (§15.3.7.2),
  for one ``206`` part or a ``multipart/byteranges`` body;
- ``UNSATISFIABLE``: none of the ranges lies in the object: ``416`` with
  ``Content-Range: bytes */size``.

More than :data:`MAX_RANGES` ranges in one header are refused with
:class:`~atlas.errors.InvalidInput` (``400``): many small ranges are the mark of a broken
client or of a denial of service (§14.2). Nothing here knows about FastAPI or stores: the
multipart framing is computed from the ranges alone, so its length is known before any byte is
read.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from atlas.errors import InvalidInput

__all__ = [
    "MAX_RANGES",
    "ByteRange",
    "Multipart",
    "RangeOutcome",
    "RangePlan",
    "plan_ranges",
    "unsatisfied_content_range",
]

#: ranges one request may ask for; more are refused with 400
MAX_RANGES = 16
#: digits of a position beyond which it is taken as "larger than any object"
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS
_SPEC = re.compile(r"(\d*)-(\d*)")


class RangeOutcome(Enum):
    """What a ``Range`` header asks the server to send."""

    FULL = "full"
    PARTIAL = "partial"
    UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True, order=True)
class ByteRange:
    """Bytes ``start`` to ``stop`` (exclusive) of an object."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        """Number of bytes."""
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value of this range of an object of ``size`` bytes."""
        return f"bytes {self.start}-{self.stop - 1}/{size}"


@dataclass(frozen=True)
class RangePlan:
    """The answer to a ``Range`` header: its outcome and the ranges to send (``PARTIAL``)."""

    outcome: RangeOutcome
    ranges: tuple[ByteRange, ...] = ()


def unsatisfied_content_range(size: int) -> str:
    """The ``Content-Range`` of a ``416`` answer."""
    return f"bytes */{size}"


def _number(text: str) -> int:
    # Python refuses int() of very long digit strings; positions that long exceed any object
    return int(text) if len(text) <= _MAX_DIGITS else _HUGE


def plan_ranges(header: str | None, size: int, *, max_ranges: int = MAX_RANGES) -> RangePlan:
    """What to send for ``Range: header`` on an object of ``size`` bytes.

    Parameters
    ----------
    header
        The ``Range`` header value, or ``None``.
    size
        The object's length in bytes.
    max_ranges
        The most ranges one header may list.

    Returns
    -------
    RangePlan
        ``FULL`` (send everything, ``200``), ``PARTIAL`` with sorted, disjoint, non-adjacent
        ranges (``206``), or ``UNSATISFIABLE`` (``416``).

    Raises
    ------
    InvalidInput
        The header lists more than ``max_ranges`` ranges.
    """
    if header is None:
        return RangePlan(RangeOutcome.FULL)
    unit, eq, spec_text = header.strip().partition("=")
    if not eq or unit.lower() != "bytes":
        return RangePlan(RangeOutcome.FULL)  # unknown unit or no '=': ignored (§14.2)
    # a list (§5.6.1): elements separated by commas and optional whitespace, empty ones ignored
    specs = [s.strip(" \t") for s in spec_text.split(",")]
    specs = [s for s in specs if s]
    if not specs:
        return RangePlan(RangeOutcome.FULL)
    if len(specs) > max_ranges:
        raise InvalidInput(
            f"the Range header asks for {len(specs)} ranges; at most {max_ranges} per request"
        )
    wanted: list[ByteRange] = []
    for spec in specs:
        m = _SPEC.fullmatch(spec)
        if m is None or (not m.group(1) and not m.group(2)):
            return RangePlan(RangeOutcome.FULL)  # not the grammar: the header is ignored
        first, last = m.group(1), m.group(2)
        if first:
            a = _number(first)
            b = _number(last) if last else None
            if b is not None and b < a:
                return RangePlan(RangeOutcome.FULL)  # last-pos < first-pos: invalid
            if a < size:
                wanted.append(ByteRange(a, size if b is None or b >= size else b + 1))
        else:
            n = _number(last)
            if n > 0 and size > 0:
                wanted.append(ByteRange(max(0, size - n), size))
            elif n > 0:
                # a suffix of an empty object is satisfiable but selects nothing: 200, empty
                return RangePlan(RangeOutcome.FULL)
    if not wanted:
        return RangePlan(RangeOutcome.UNSATISFIABLE)
    merged: list[ByteRange] = []
    for r in sorted(wanted):
        if merged and r.start <= merged[-1].stop:
            last_r = merged[-1]
            merged[-1] = ByteRange(last_r.start, max(last_r.stop, r.stop))
        else:
            merged.append(r)
    return RangePlan(RangeOutcome.PARTIAL, tuple(merged))


class Multipart:
    """The ``multipart/byteranges`` body of several ranges (RFC 9110 §14.6).

    Parameters
    ----------
    ranges
        The ranges, as :func:`plan_ranges` gives them.
    size
        The object's length.
    media_type
        The object's own media type (each part's ``Content-Type``).
    boundary
        The delimiter (default: 32 random hex digits, never found in stored data by chance).
    """

    def __init__(
        self,
        ranges: tuple[ByteRange, ...],
        size: int,
        media_type: str,
        boundary: str | None = None,
    ) -> None:
        self.ranges = ranges
        self.boundary = boundary or secrets.token_hex(16)
        self.heads = [
            (
                f"--{self.boundary}\r\nContent-Type: {media_type}\r\n"
                f"Content-Range: {r.content_range(size)}\r\n\r\n"
            ).encode("ascii")
            for r in ranges
        ]
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def media_type(self) -> str:
        """The response's ``Content-Type``."""
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def length(self) -> int:
        """The body's length in bytes (its ``Content-Length``)."""
        between = 2 * (len(self.ranges) - 1)  # the CRLF before each later delimiter
        parts = sum(len(h) + r.length for h, r in zip(self.heads, self.ranges, strict=True))
        return parts + between + len(self.tail)

    def body(self, read: Callable[[ByteRange], Iterator[bytes]]) -> Iterator[bytes]:
        """The body, with each range's bytes from ``read(range)`` (which may yield in pieces)."""
        for i, (head, r) in enumerate(zip(self.heads, self.ranges, strict=True)):
            yield (b"\r\n" + head) if i else head
            yield from read(r)
        yield self.tail
