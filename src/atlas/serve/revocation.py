"""Revoked tokens: :class:`Revocations`, a file of token ids (``jti``), one per line.

``atlas token revoke JTI`` appends a line; every server process re-reads the file when it
changed (size, modification time or inode), looking at most every ``revocation_poll_s``
(default 5 s), so a revocation takes effect within that bound on every worker without a
restart. Lines starting with ``#`` and blank lines are ignored. A missing file revokes nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from atlas.errors import ConfigError, InvalidInput, Unauthorized
from atlas.serve.grants import Grant

__all__ = ["Revocations", "check_token_id"]

_JTI = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_token_id(token_id: str) -> str:
    """A token id as the revocation file holds it (not a whole token).

    Raises
    ------
    InvalidInput
        Empty, too long, or with characters a token id does not have; a whole JWT (three
        dot-separated parts) is refused so that a token is never written to the file.
    """
    if isinstance(token_id, str) and token_id.count(".") >= 2 and len(token_id) > 64:
        raise InvalidInput(
            "that is a whole token, not a token id; `atlas token show TOKEN` prints its id"
        )
    if not isinstance(token_id, str) or not _JTI.match(token_id):
        raise InvalidInput("a token id is 1-128 letters, digits or . _ : -")
    return token_id


class Revocations:
    """The revoked token ids, re-read from ``path`` when it changes.

    Parameters
    ----------
    path
        The revocation file.
    poll_s
        The file is looked at (one ``stat``) at most this often; a change is read at once.
    clock
        A monotonic clock in seconds (``time.monotonic``); tests pass a fake one.
    """

    def __init__(
        self, path: str | Path, poll_s: float = 5.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not poll_s > 0:
            raise ConfigError(f"revocation_poll_s must be positive, got {poll_s!r}")
        self.path = Path(path)
        self.poll_s = float(poll_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()
        self._seen: tuple[int, int, int] | None = None
        self._checked: float | None = None
        self.reloads = 0

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> frozenset[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return frozenset()
        return frozenset(
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        )

    def _refresh(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            if self._checked is not None and now - self._checked < self.poll_s:
                return self._ids
            self._checked = now
            signature = self._signature()
            if signature != self._seen:
                self._ids = self._read()
                self._seen = signature
                self.reloads += 1
            return self._ids

    def revoked(self) -> frozenset[str]:
        """Every revoked id (as of the last look at the file)."""
        return self._refresh()

    def is_revoked(self, token_id: str) -> bool:
        """Whether ``token_id`` is revoked (as of at most ``poll_s`` ago)."""
        return token_id in self._refresh()

    def check(self, grant: Grant) -> Grant:
        """``grant`` unchanged, or :class:`Unauthorized` when its token is revoked."""
        if self.is_revoked(grant.token_id):
            raise Unauthorized(f"token {grant.token_id!r} has been revoked")
        return grant

    def revoke(self, token_id: str) -> bool:
        """Append ``token_id`` to the file (locked, fsynced); ``False`` if already revoked.

        Raises
        ------
        InvalidInput
            Not a token id (see :func:`check_token_id`).
        ConfigError
            The file's folder does not exist.
        """
        jti = check_token_id(token_id)
        if not self.path.parent.is_dir():
            raise ConfigError(f"the folder of the revocation file {self.path.name} does not exist")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with open(fd, "rb", closefd=False) as f:
                text = f.read().decode("utf-8", errors="replace")
            current = {line.strip() for line in text.splitlines()}
            if jti in current:
                return False
            prefix = "" if not text or text.endswith("\n") else "\n"
            os.write(fd, f"{prefix}{jti}\n".encode())
            os.fsync(fd)
            with self._lock:
                self._checked = None  # this process sees its own revocation at once
            return True
        finally:
            os.close(fd)  # closing releases the lock
