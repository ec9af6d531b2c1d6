"""Claims: at most one run ingests a given series of a store at a time.

Before a series is written, its run creates ``_journal/_claims/<series_id>.json`` with a
create-if-absent write (:meth:`Store.put_if_absent`: of concurrent runs, on any number of
hosts, exactly one wins). The claim names its run (a random id), host and process and when it
was last renewed; a thread renews it every :data:`RENEW_S` seconds while the series is
written, and it is deleted when the series is done (written, skipped or quarantined).

A run that finds the series claimed does not wait: it reports the series as *being ingested by
another run* (status ``busy``) and goes on with the next one. So two runs of the same command
share the work instead of overwriting each other's images; a later rerun reports every series
as done. A claim is stale, and taken over with a compare-and-swap
(:meth:`Store.put_if_match`), when its process is gone (same host, no such process) or it was
not renewed for :data:`STALE_AFTER_S` seconds (a crashed run on another host); so ``kill -9``
never blocks a rerun.

Claims are held per call of a decorated task function (:func:`scoped`): whatever the call
claimed is released when it returns or raises. Claims hold no original or pseudonymous
identifier besides the series id in their key.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from atlas.errors import NotFound
from atlas.records.journal import JOURNAL_PREFIX
from atlas.storage import Store

CLAIMS_PREFIX = f"{JOURNAL_PREFIX}/_claims"
RENEW_S = 10.0
STALE_AFTER_S = 120.0
BUSY = (
    "being ingested by another run (it is claimed); run the command again after that run "
    "ends to check it"
)

_log = logging.getLogger(__name__)
_held: contextvars.ContextVar[list[Claim] | None] = contextvars.ContextVar(
    "atlas_ingest_claims", default=None
)
F = TypeVar("F", bound=Callable[..., Any])


def claim_key(series_id: str) -> str:
    """Where the claim of one series lives."""
    return f"{CLAIMS_PREFIX}/{series_id}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_stale(entry: dict[str, Any], now: float | None = None) -> bool:
    """Whether a claim was left by a run that no longer works on it."""
    now = time.time() if now is None else now
    try:
        renewed = float(entry.get("renewed_unix", 0))
    except (TypeError, ValueError):
        return True
    if now - renewed > STALE_AFTER_S:
        return True
    pid = entry.get("pid")
    if entry.get("host") == socket.gethostname() and isinstance(pid, int):
        return not _pid_alive(pid)
    return False


class Claim:
    """A held claim on one series, renewed by a daemon thread until :meth:`release`."""

    def __init__(self, store: Store, series_id: str, token: str, run: str) -> None:
        self.store = store
        self.key = claim_key(series_id)
        self.run = run
        self._token = token
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._renew, name="atlas-claim", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Claim(run={self.run[:8]!r}, lost={self.lost})"

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                ok = self.store.put_if_match(self.key, _payload(self.run), self._token)
                if ok:
                    self._token = self.store.read_versioned(self.key)[1]
                else:
                    self.lost = True
                    _log.warning("a series claim was taken over by another run")
                    return
            except Exception as exc:  # a transient store error: try again next period
                _log.warning("could not renew a series claim: %s", type(exc).__name__)

    def release(self) -> None:
        """Stop renewing and delete the claim if it is still this run's."""
        self._stop.set()
        self._thread.join(timeout=RENEW_S)
        try:
            data, _ = self.store.read_versioned(self.key)
            if json.loads(data).get("run") == self.run:
                self.store.delete(self.key)
        except NotFound:
            pass
        except Exception as exc:  # left behind: it goes stale and is taken over
            _log.warning("could not release a series claim: %s", type(exc).__name__)


def _payload(run: str) -> bytes:
    entry = {
        "run": run,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "renewed_unix": round(time.time(), 3),
    }
    return json.dumps(entry, sort_keys=True).encode()


def acquire(store: Store, series_id: str) -> Claim | None:
    """Claim the series (``None``: another live run holds it); see the module docstring."""
    key = claim_key(series_id)
    run = uuid.uuid4().hex
    for _ in range(3):
        if store.put_if_absent(key, _payload(run)):
            return Claim(store, series_id, store.read_versioned(key)[1], run)
        try:
            data, token = store.read_versioned(key)
        except NotFound:
            continue  # released in between: try to create it again
        try:
            entry = json.loads(data)
        except ValueError:
            entry = {}
        if not isinstance(entry, dict) or not is_stale(entry):
            return None
        if store.put_if_match(key, _payload(run), token):
            return Claim(store, series_id, store.read_versioned(key)[1], run)
    return None


def take(store: Store, series_id: str) -> bool:
    """Claim the series for the current :func:`scoped` call; ``False`` when it is busy.

    Outside a scoped call nothing is claimed and ``True`` is returned.
    """
    held = _held.get()
    if held is None:
        return True
    claim = acquire(store, series_id)
    if claim is None:
        return False
    held.append(claim)
    return True


def scoped(fn: F) -> F:
    """Run ``fn`` with its own claim scope: claims it takes are released when it ends."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        held: list[Claim] = []
        token = _held.set(held)
        try:
            return fn(*args, **kwargs)
        finally:
            _held.reset(token)
            for claim in held:
                claim.release()

    return wrapper  # type: ignore[return-value]


__all__ = ["BUSY", "CLAIMS_PREFIX", "Claim", "acquire", "claim_key", "is_stale", "scoped", "take"]
