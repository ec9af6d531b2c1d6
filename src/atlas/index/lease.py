"""Leases on index version folders: who is writing a version, and whether they are alive.

A build (or an erasure publishing a version) claims its version folder by creating
``_index/versions/<v>/CLAIM`` with a create-if-absent write. The claim is a small JSON lease::

    {"state": "building", "owner": "<random>", "heartbeat_unix": 1796140000.0, "ttl_s": 120}

While it works, the owner renews the heartbeat every ``ttl_s / 4`` seconds by compare-and-swap
on the claim. A lease is *live* while ``state == "building"`` and the last heartbeat is less than
``ttl_s`` old; :mod:`atlas.index.gc` never touches a version with a live lease. Whoever ends a
lease (the owner when it publishes or gives up, or garbage collection when it expired) replaces
it by compare-and-swap with a final state — ``published``, ``abandoned`` or ``collected`` — and
never deletes it: version names are never reused, and an owner that was only paused (not dead)
finds its lease gone at its next renewal and stops before it publishes.

Leases compare the writer's clock with the reader's: keep the machines' clocks within a small
fraction of ``ttl_s`` (NTP does).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from atlas.errors import AtlasError, InvalidInput, NotFound
from atlas.index import layout
from atlas.storage import Store

CLAIM_NAME = "CLAIM"
#: seconds a lease stays live without a heartbeat
DEFAULT_TTL_S = 120.0
FINAL_STATES = ("published", "abandoned", "collected", "released")


class LeaseLost(AtlasError):
    """The lease on a version folder was taken away (it expired and was collected)."""


def claim_key(version: str) -> str:
    """The lease object of one version folder."""
    return f"{layout.version_prefix(version)}/{CLAIM_NAME}"


@dataclass(frozen=True)
class LeaseState:
    """What a version's claim says."""

    state: str
    owner: str | None = None
    heartbeat_unix: float = 0.0
    ttl_s: float = 0.0

    def live(self, now: float | None = None) -> bool:
        """Whether a build is (as far as anyone can tell) still writing this version."""
        now = time.time() if now is None else now
        return self.state == "building" and now - self.heartbeat_unix < self.ttl_s

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until the lease expires (negative: expired)."""
        now = time.time() if now is None else now
        return self.heartbeat_unix + self.ttl_s - now


def _parse(raw: bytes) -> LeaseState:
    try:
        body: dict[str, Any] = json.loads(raw)
        return LeaseState(
            state=str(body["state"]),
            owner=body.get("owner"),
            heartbeat_unix=float(body.get("heartbeat_unix", 0.0)),
            ttl_s=float(body.get("ttl_s", 0.0)),
        )
    except (ValueError, KeyError, TypeError):
        # claims written before leases existed: no heartbeat, so never live
        return LeaseState(state="legacy")


def read_lease(store: Store, version: str) -> tuple[LeaseState | None, str | None]:
    """``(lease, version token)`` of a version folder; ``(None, None)`` when it has no claim."""
    try:
        raw, token = store.read_versioned(claim_key(version))
    except NotFound:
        return None, None
    return _parse(raw), token


def end_lease(store: Store, version: str, token: str, state: str) -> bool:
    """Replace the lease read at ``token`` by a final ``state``; ``False`` if it changed since."""
    if state not in FINAL_STATES:
        raise InvalidInput(f"not a final lease state: {state!r}")
    body = json.dumps({"state": state, "ended_unix": time.time()}).encode()
    return store.put_if_match(claim_key(version), body, token)


class Lease:
    """A held lease on one version folder; renew it with :meth:`renew` or a heartbeat thread.

    Use as a context manager to keep a heartbeat running while the version is written::

        with claim(store, pointer) as lease:
            ... write lease.version ...
            lease.check()            # raises LeaseLost if garbage collection took it
            lease.end("published")
    """

    def __init__(
        self,
        store: Store,
        version: str,
        owner: str,
        ttl_s: float,
        token: str,
        key: str | None = None,
    ):
        self.store = store
        self.version = version
        self.key = key or claim_key(version)
        self.owner = owner
        self.ttl_s = ttl_s
        self._token: str | None = token
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: BaseException | None = None

    def _body(self) -> bytes:
        body = {"state": "building", "owner": self.owner, "ttl_s": self.ttl_s}
        return json.dumps({**body, "heartbeat_unix": time.time()}).encode()

    def renew(self) -> None:
        """Renew the heartbeat now; :class:`LeaseLost` if the lease is no longer ours."""
        with self._lock:
            if self._lost is not None:
                raise self._lost
            if self._token is None:
                raise LeaseLost(f"the lease on index version {self.version} was already ended")
            body = self._body()
            if not self.store.put_if_match(self.key, body, self._token):
                if self.key == claim_key(self.version):
                    message = (
                        f"the lease on index version {self.version} of {self.store.url} expired "
                        "and was collected (the build stalled longer than its lease); rerun the "
                        "build"
                    )
                else:  # a lock lease (acquire): ``version`` names what the lock guards
                    message = (
                        f"the {self.version} lock {self.key} of {self.store.url} expired and was "
                        f"taken by another {self.version} (this one stalled longer than its "
                        "lease); run it again"
                    )
                self._lost = LeaseLost(message, site=self.store.site, location=self.store.url)
                raise self._lost
            self._token = self.store.read_versioned(self.key)[1]

    def check(self) -> None:
        """Raise :class:`LeaseLost` if a heartbeat found the lease taken away."""
        if self._lost is not None:
            raise self._lost

    def end(self, state: str) -> bool:
        """End the lease with a final state (``published`` or ``abandoned``)."""
        self.stop()
        with self._lock:
            token, self._token = self._token, None
        if token is None or self._lost is not None:
            return False
        if state not in FINAL_STATES:
            raise InvalidInput(f"not a final lease state: {state!r}")
        body = json.dumps({"state": state, "ended_unix": time.time()}).encode()
        return self.store.put_if_match(self.key, body, token)

    def _beat(self) -> None:
        interval = max(self.ttl_s / 4, 0.05)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception:  # a missed beat is retried at the next interval
                continue

    def start(self) -> Lease:
        """Start the heartbeat thread (daemon: it dies with the process)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name=f"atlas-lease-{self.version}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Lease:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def existing_versions(store: Store) -> list[int]:
    """Numbers of every version folder in the store (claimed, built or published)."""
    return sorted(
        {
            int(k.split("/")[2][1:])
            for k in store.list(f"{layout.INDEX_PREFIX}/versions/")
            if k.count("/") >= 3 and k.split("/")[2][1:].isdigit()
        }
    )


def claim(store: Store, pointer: dict[str, Any] | None, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """Reserve the next free version name with a live lease (create-if-absent).

    Two builds running at once so never write into the same version folder.
    """
    if not ttl_s > 0 or ttl_s == float("inf"):
        raise InvalidInput("lease ttl_s must be a finite number of seconds > 0")
    owner = uuid.uuid4().hex
    current = int(pointer["version"][1:]) if pointer else 0
    number = max([current, *existing_versions(store)]) + 1
    while True:
        version = layout.version_name(number)
        lease = Lease(store, version, owner, ttl_s, token="")
        if store.put_if_absent(claim_key(version), lease._body()):
            lease._token = store.read_versioned(claim_key(version))[1]
            return lease
        number += 1


def acquire(store: Store, key: str, what: str, ttl_s: float = DEFAULT_TTL_S) -> Lease | None:
    """Take the lock lease at ``key`` (free when absent, ended or expired).

    ``None`` when someone else holds it live. The caller starts the heartbeat and ends it as
    ``released``.
    """
    owner = uuid.uuid4().hex
    lease = Lease(store, what, owner, ttl_s, token="", key=key)
    for _ in range(5):
        try:
            raw, token = store.read_versioned(key)
        except NotFound:
            if store.put_if_absent(key, lease._body()):
                lease._token = store.read_versioned(key)[1]
                return lease
            continue
        if _parse(raw).live():
            return None
        if store.put_if_match(key, lease._body(), token):
            lease._token = store.read_versioned(key)[1]
            return lease
    return None
