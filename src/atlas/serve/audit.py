"""The audit trail: :class:`AuditTrail`, an append-only, hash-chained log of every request.

One JSON line per request, with the fields of a DICOM audit message (PS3.15 A.5): what
happened (:class:`AuditEvent`), the action (:class:`AuditAction`), when (UTC), the outcome
(:class:`AuditOutcome`), who (the token's subject and id, the client address, the purpose),
what (the route, the series pseudonym and site) and how much (tiles, bytes). No original
identifier, and never a token: only its id.

Each record carries ``seq`` (1, 2, ...), ``prev`` (the previous record's ``hash``) and
``hash``: an HMAC-SHA256, under a key derived from the server key, of ``prev`` and the record's
canonical JSON. Editing, removing, reordering or inserting a record breaks the chain at that
record, and without the key the chain cannot be recomputed; :meth:`AuditTrail.verify` names
the first record that does not hold.

Appends are safe across threads and processes (``uvicorn --workers``): each takes an
exclusive ``flock`` on the file, reads the last record, appends one line with a single
``write`` and syncs it to disk (``fsync``) before releasing the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

from atlas.errors import ConfigError, CorruptData, InvalidInput
from atlas.serve.redact import redact_path, redact_text
from atlas.serve.tokens import KEY_BYTES, derive_key

__all__ = ["GENESIS", "AuditAction", "AuditCheck", "AuditEvent", "AuditOutcome", "AuditTrail"]

#: the ``prev`` of the first record
GENESIS = "0" * 64
_FIELD_CHARS = 256
_ROUTE_CHARS = 512
_TAIL_BYTES = 16384
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuditEvent(StrEnum):
    """What happened (DICOM PS3.15 A.5.3 event ids, with :attr:`code`)."""

    QUERY = "query"
    INSTANCES_ACCESSED = "instances-accessed"
    SECURITY_ALERT = "security-alert"
    APPLICATION_ACTIVITY = "application-activity"

    @property
    def code(self) -> tuple[str, str]:
        """The DICOM coded event id: ``(code value, code meaning)`` of the DCM scheme."""
        return _EVENT_CODES[self]


_EVENT_CODES = {
    AuditEvent.QUERY: ("110112", "Query"),
    AuditEvent.INSTANCES_ACCESSED: ("110103", "DICOM Instances Accessed"),
    AuditEvent.SECURITY_ALERT: ("110113", "Security Alert"),
    AuditEvent.APPLICATION_ACTIVITY: ("110100", "Application Activity"),
}


class AuditAction(StrEnum):
    """The event action code (PS3.15 A.5.1 ``EventActionCode``)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class AuditOutcome(IntEnum):
    """The event outcome indicator (PS3.15 A.5.1 ``EventOutcomeIndicator``)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12

    @classmethod
    def from_status(cls, status: int) -> AuditOutcome:
        """The outcome of an HTTP status: 2xx/3xx success, 4xx minor, 5xx serious failure."""
        if status >= 500:
            return cls.SERIOUS_FAILURE
        if status >= 400:
            return cls.MINOR_FAILURE
        return cls.SUCCESS


@dataclass(frozen=True)
class AuditCheck:
    """What :meth:`AuditTrail.verify` found.

    Attributes
    ----------
    ok
        Every record holds and chains to the one before.
    count
        Records that hold (all of them when ``ok``; those before the first bad one otherwise).
    first_bad
        The ``seq`` of the first record that does not hold (``None`` when ``ok``).
    reason
        Why it does not hold (``None`` when ``ok``).
    head
        The last good record's hash (note it elsewhere to detect a cut-off tail later).
    """

    ok: bool
    count: int
    first_bad: int | None = None
    reason: str | None = None
    head: str = GENESIS


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A line as a record with an integer ``seq`` and a string ``hash``, else ``None``."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or isinstance(record.get("seq"), bool)
        or not isinstance(record.get("seq"), int)
        or not isinstance(record.get("hash"), str)
    ):
        return None
    return record


def _text(name: str, value: object, limit: int = _FIELD_CHARS) -> str | None:
    """A field as the trail may hold it: a string, tokens shortened, no control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"audit field {name} must be a string, got {type(value).__name__}")
    return _CONTROL.sub("?", redact_text(value))[:limit]


def _member(kind: type[Any], name: str, value: object) -> Any:
    """``value`` as a member of the vocabulary ``kind`` (InvalidInput naming the choices)."""
    try:
        return kind(value)
    except ValueError:
        choices = [m.value for m in kind]
        raise InvalidInput(f"audit field {name} must be one of {choices}, got {value!r}") from None


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"audit field {name} must be an integer >= 0, got {value!r}")
    return value


class AuditTrail:
    """The audit log at ``path``, chained with a key derived from the server ``key``.

    Parameters
    ----------
    path
        The JSON-lines file (created with mode 0600 on the first append).
    key
        The server key (``Authenticator.key``); verifying needs the same key.
    clock
        Seconds since the epoch (``time.time``), for the records' ``time``.
    """

    def __init__(
        self, path: str | Path, key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        if len(key) < KEY_BYTES:
            raise ConfigError(f"the server key must have at least {KEY_BYTES} bytes")
        self.path = Path(path)
        self._key = derive_key(key, "audit")
        self._clock = clock
        self._lock = threading.Lock()

    def _mac(self, body: dict[str, Any]) -> str:
        prev = str(body.get("prev", ""))
        return hmac.new(self._key, prev.encode() + _canonical(body), hashlib.sha256).hexdigest()

    def append(
        self,
        *,
        event: AuditEvent,
        action: AuditAction,
        outcome: AuditOutcome,
        subject: str | None,
        token_id: str | None,
        client: str | None,
        purpose: str | None,
        route: str,
        object_id: str | None = None,
        site: str | None = None,
        tiles: int = 0,
        nbytes: int = 0,
    ) -> dict[str, Any]:
        """Append one record and return it (with its ``seq``, ``prev`` and ``hash``).

        Parameters
        ----------
        event, action, outcome
            What happened, as the DICOM vocabularies name it.
        subject, token_id, purpose
            The grant's subject, token id and purpose (``None`` when unauthenticated).
        client
            The client's address.
        route
            The request path; its query string is dropped and a signed URL's token shortened.
        object_id, site
            The series pseudonym served and its site.
        tiles, nbytes
            How many tiles and bytes were served.

        Raises
        ------
        InvalidInput
            A field of the wrong type or vocabulary.
        ConfigError
            The log's folder does not exist.
        CorruptData
            The last record of the log is damaged (``atlas audit verify`` names it).
        """
        body: dict[str, Any] = {
            "seq": 0,
            "time": "",
            "event": _member(AuditEvent, "event", event).value,
            "action": _member(AuditAction, "action", action).value,
            "outcome": int(_member(AuditOutcome, "outcome", outcome)),
            "subject": _text("subject", subject),
            "token_id": _text("token_id", token_id),
            "client": _text("client", client),
            "purpose": _text("purpose", purpose),
            "route": _text("route", redact_path(str(route).split("?", 1)[0]), _ROUTE_CHARS),
            "object_id": _text("object_id", object_id),
            "site": _text("site", site),
            "tiles": _count("tiles", tiles),
            "nbytes": _count("nbytes", nbytes),
        }
        if not self.path.parent.is_dir():
            raise ConfigError(f"the folder of the audit log {self.path.name} does not exist")
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                seq, prev, torn = self._last(fd)
                body["seq"] = seq + 1
                body["time"] = (
                    datetime.fromtimestamp(self._clock(), UTC)
                    .isoformat(timespec="microseconds")
                    .replace("+00:00", "Z")
                )
                body["prev"] = prev
                body["hash"] = self._mac(body)
                line = json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n"
                os.write(fd, (("\n" if torn else "") + line).encode())
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        return body

    def _last(self, fd: int) -> tuple[int, str, bool]:
        """``(seq, hash, torn)`` of the last whole record (``torn``: a partial line follows)."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS, False
        span = min(size, _TAIL_BYTES)
        while True:
            tail = os.pread(fd, span, size - span)
            torn = not tail.endswith(b"\n")
            lines = tail.split(b"\n")
            lines.pop()  # the empty rest after the last newline, or the torn line
            if lines and (len(lines) > 1 or span == size):
                break
            if span == size:
                return 0, GENESIS, torn  # only a torn first line
            span = min(size, span * 4)
        record = _parse(lines[-1])
        if record is None:
            raise CorruptData(
                f"the last record of the audit log {self.path.name} is damaged; "
                "run `atlas audit verify` to find it"
            )
        return record["seq"], record["hash"], torn

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first.

        Raises
        ------
        CorruptData
            A line is not a JSON record (the message names its line number).
        """
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, 1):
                record = _parse(raw)
                if record is None:
                    raise CorruptData(
                        f"line {n} of the audit log {self.path.name} is not a record; "
                        "run `atlas audit verify`"
                    )
                yield record

    def last(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records, oldest first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"the number of records must be at least 1, got {n!r}")
        return list(deque(self.records(), maxlen=n))

    def verify(self) -> AuditCheck:
        """Check every record's hash and its link to the record before.

        Returns
        -------
        AuditCheck
            ``ok`` with the count and head hash, or the ``seq`` of the first record that was
            edited, forged, removed before, moved or repeated, with the reason.
        """
        prev, expected, count = GENESIS, 1, 0
        if not self.path.exists():
            return AuditCheck(True, 0)
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, 1):
                record = _parse(raw)
                if record is None:
                    return AuditCheck(False, count, expected,
                                      f"line {n} is not a complete audit record", prev)  # fmt: skip
                seq, digest = record["seq"], record["hash"]
                body = {k: v for k, v in record.items() if k != "hash"}
                if not hmac.compare_digest(digest, self._mac(body)):
                    return AuditCheck(False, count, seq,
                                      f"record {seq} was altered or forged: its hash does not "
                                      "match its content", prev)  # fmt: skip
                if seq != expected:
                    how = "removed or reordered" if seq > expected else "reordered or repeated"
                    return AuditCheck(False, count, seq,
                                      f"record {seq} follows record {expected - 1}: records "
                                      f"{how}", prev)  # fmt: skip
                if record.get("prev") != prev:
                    return AuditCheck(False, count, seq,
                                      f"record {seq} does not chain to record {seq - 1}: a "
                                      "record before it was replaced", prev)  # fmt: skip
                prev, expected, count = digest, expected + 1, count + 1
        return AuditCheck(True, count, head=prev)
