"""Conditional writes: what is particular to local disk and to S3.

The contract every backend keeps (races, compare-and-swap, bad input, faults) is in
:mod:`atlas.testing.store_tests`, run on every backend by ``test_store_suite.py``.

Real backends only: a temporary directory, ``memory://`` and SeaweedFS servers (one
``weed mini`` and, for the races, the multi-process cluster). Races use real threads and, on
local disk, real processes started with ``spawn``.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import replace
from typing import Any

import pytest
from tests.stores import s3_store

import atlas.storage.backends.local as local_backend
from atlas.errors import Forbidden, InvalidInput, NotFound, StoreUnavailable
from atlas.storage import Store, open_store
from atlas.testing.seaweed import SeaweedS3, find_weed
from atlas.testing.store_tests import (
    PROCESSES,
    THREADS,
    assert_one_winner,
    count_up,
    race,
)


# -- local disk ---------------------------------------------------------------------------
def _create_in_child(store: Store, key: str, payload: bytes, barrier: Any, queue: Any) -> None:
    barrier.wait(60)
    queue.put((payload, store.put_if_absent(key, payload)))


def _count_in_child(store: Store, key: str, times: int, barrier: Any, queue: Any) -> None:
    barrier.wait(60)
    queue.put(count_up(store, key, times))


def _run_children(target: Callable[..., None], args: list[tuple[object, ...]]) -> list[object]:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, queue)) for a in args]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=90) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return results


def _local(tmp_path) -> Store:
    return open_store(tmp_path / "store", site="test-site")


class TestLocal:
    def test_processes_race_for_one_key(self, tmp_path) -> None:
        store = _local(tmp_path)
        payloads = [f"process {i}".encode() for i in range(PROCESSES)]
        results = _run_children(_create_in_child, [(store, "lock", p) for p in payloads])
        winners = [payload for payload, won in results if won]
        assert len(winners) == 1, results
        assert store.read_bytes("lock") == winners[0]
        assert store.list() == ["lock"]

    def test_processes_compare_and_swap_lose_no_update(self, tmp_path) -> None:
        store = _local(tmp_path)
        store.write_bytes("counter", b"0")
        per_process = 25
        _run_children(_count_in_child, [(store, "counter", per_process)] * PROCESSES)
        assert store.read_bytes("counter") == str(PROCESSES * per_process).encode()
        assert store.list() == ["counter"]

    def test_stale_lock_is_broken(self, tmp_path) -> None:
        store = _local(tmp_path)
        store.write_bytes("m", b"v1")
        _, token = store.read_versioned("m")
        lock = tmp_path / "store" / "m.atlas-lock"
        lock.write_bytes(b"a writer that crashed")
        old = time.time() - local_backend.LOCK_STALE_AFTER_S - 5
        os.utime(lock, (old, old))
        assert store.put_if_match("m", b"v2", token) is True
        assert store.read_bytes("m") == b"v2"
        assert not lock.exists()

    def test_busy_lock_gives_up(self, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(local_backend, "LOCK_WAIT_S", 0.2)
        store = _local(tmp_path)
        store.write_bytes("m", b"v1")
        _, token = store.read_versioned("m")
        lock = tmp_path / "store" / "m.atlas-lock"
        lock.write_bytes(b"a live writer")  # fresh: must not be broken
        slow = Store(store.location, retry=None)
        with pytest.raises(StoreUnavailable, match=r"m\.atlas-lock has been held"):
            slow.put_if_match("m", b"v2", token)
        assert lock.read_bytes() == b"a live writer"
        assert store.read_bytes("m") == b"v1"

    def test_filesystem_without_hard_links(self, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Some network and FAT filesystems refuse ``link()``; the lock-file path takes over."""

        def no_links(src: str, dst: str) -> None:
            raise OSError(errno.EPERM, "Operation not permitted", src)

        monkeypatch.setattr(local_backend.os, "link", no_links)
        store = _local(tmp_path)
        payloads = [f"writer {i}".encode() for i in range(THREADS)]
        results = race(THREADS, lambda i: store.put_if_absent("lock", payloads[i]))
        assert_one_winner(store, "lock", results, payloads)
        assert store.list() == ["lock"]

    def test_file_in_the_way(self, tmp_path) -> None:
        (tmp_path / "f").write_text("not a directory")
        store = _local(tmp_path / "f")
        with pytest.raises(InvalidInput, match="a file is in the way"):
            store.put_if_absent("k", b"v")
        root = _local(tmp_path)
        root.write_bytes("a", b"file")
        with pytest.raises(InvalidInput, match="a file is in the way"):
            root.put_if_absent("a/b", b"v")


# -- S3 ---------------------------------------------------------------------------------
class _NoAutoCreateSeaweed(SeaweedS3):
    """``weed mini`` that, like AWS, refuses uploads to a missing bucket.

    By default SeaweedFS creates a missing bucket on upload for admin identities
    (``-s3.autoCreateBucket``), so a misspelled bucket would never be reported.
    """

    def _spawn(self, name: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        return super()._spawn(name, [*args, "-s3.autoCreateBucket=false"], *rest, **kw)


@pytest.fixture(scope="module")
def strict_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    try:
        find_weed()
    except NotFound as exc:
        pytest.skip(str(exc))
    server = _NoAutoCreateSeaweed(tmp_path_factory.mktemp("strict-seaweed"), buckets=["atlas"])
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.s3
class TestS3:
    def test_read_only_identity_is_forbidden(self, seaweed) -> None:
        writer = s3_store(seaweed)
        writer.write_bytes("m", b"v1")
        _, token = writer.read_versioned("m")
        reader = s3_store(seaweed, creds=seaweed.readonly, prefix=writer.location.prefix)
        assert reader.read_versioned("m") == (b"v1", token)
        with pytest.raises(Forbidden, match="refused to set"):
            reader.put_if_absent("new", b"v")
        with pytest.raises(Forbidden, match="refused to set"):
            reader.put_if_match("m", b"v2", token)
        assert writer.read_bytes("m") == b"v1"
        assert not writer.exists("new")

    def test_wrong_secret_is_forbidden(self, seaweed) -> None:
        from atlas.testing.seaweed import S3Credentials

        bad = s3_store(seaweed, creds=S3Credentials(seaweed.admin.access_key, "wrong"))
        with pytest.raises(Forbidden, match="site 'test-site'"):
            bad.put_if_absent("k", b"v")
        with pytest.raises(Forbidden):
            bad.read_versioned("k")

    def test_missing_bucket_is_not_found(self, strict_seaweed) -> None:
        store = s3_store(strict_seaweed, bucket="no-such-bucket")
        with pytest.raises(NotFound, match="no such bucket"):
            store.put_if_absent("k", b"v")
        with pytest.raises(NotFound, match="no such bucket"):
            store.put_if_match("k", b"v", None)
        with pytest.raises(NotFound, match="no such bucket"):
            store.read_versioned("k")
        # SeaweedFS evaluates If-Match before it looks for the bucket (412); AWS answers 404
        assert store.put_if_match("k", b"v", '"0123"') is False
        assert strict_seaweed.s3_client().list_buckets()["Buckets"][0]["Name"] == "atlas"

    def test_token_is_the_etag(self, seaweed) -> None:
        store = s3_store(seaweed)
        store.write_bytes("k", b"v")
        _, token = store.read_versioned("k")
        head = store.fs.info(store.fs_path("k"))
        assert token == head["ETag"]

    def test_lost_response_is_not_a_lostrace(self, seaweed) -> None:
        """The server applies a conditional PUT but its answer is lost; the retry gets 412.

        A proxy between client and server drops the connection instead of passing on the
        answer to the first conditional PUT. The client's retry then finds the key present
        (412), sees its own bytes there, and reports the win it had.
        """
        with _DropFirstAnswerProxy(seaweed.s3_port) as proxy:
            direct = s3_store(seaweed)
            store = Store(replace(direct.location, endpoint=f"http://127.0.0.1:{proxy.port}"))
            assert store.put_if_absent("lock", b"owner 1") is True
            assert proxy.dropped == 1
            assert store.put_if_absent("lock", b"owner 2") is False  # a real loss stays one
            _, token = store.read_versioned("lock")
            proxy.arm()
            assert store.put_if_match("lock", b"owner 1, renewed", token) is True
            assert proxy.dropped == 2
            assert store.read_bytes("lock") == b"owner 1, renewed"

    def test_cluster_race_has_one_winner(self, seaweed_cluster) -> None:
        store = s3_store(seaweed_cluster)
        payloads = [f"writer {i}".encode() for i in range(THREADS)]
        results = race(THREADS, lambda i: store.put_if_absent("lock", payloads[i]))
        assert_one_winner(store, "lock", results, payloads)

        store.write_bytes("counter", b"0")
        race(4, lambda i: count_up(store, "counter", 1))
        assert store.read_bytes("counter") == b"4"


class _DropFirstAnswerProxy:
    """A TCP proxy to a local server that swallows the answer to one conditional request.

    While armed, the first request carrying ``If-None-Match`` or ``If-Match`` reaches the
    server, but its answer is discarded and the client's connection is closed: the write
    happened, and the client never hears so. Everything else passes through unchanged.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.dropped = 0
        self._armed = True
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]

    def arm(self) -> None:
        with self._lock:
            self._armed = True

    def __enter__(self) -> _DropFirstAnswerProxy:
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            swallow = threading.Event()
            for target in (self._requests, self._answers):
                threading.Thread(
                    target=target, args=(client, upstream, swallow), daemon=True
                ).start()

    def _requests(
        self, client: socket.socket, upstream: socket.socket, swallow: threading.Event
    ) -> None:
        with suppress(OSError):
            while chunk := client.recv(65536):
                lowered = chunk.lower()
                with self._lock:
                    if self._armed and (b"if-none-match:" in lowered or b"if-match:" in lowered):
                        self._armed = False
                        swallow.set()
                upstream.sendall(chunk)

    def _answers(
        self, client: socket.socket, upstream: socket.socket, swallow: threading.Event
    ) -> None:
        with suppress(OSError), client, upstream:
            while chunk := upstream.recv(65536):
                if swallow.is_set() and chunk.startswith(b"HTTP/1.1 100 "):
                    # "100 Continue" lets the client send the body; the final answer follows
                    interim, _, chunk = chunk.partition(b"\r\n\r\n")
                    client.sendall(interim + b"\r\n\r\n")
                    if not chunk:
                        continue
                if swallow.is_set():  # the final answer to the armed request: drop it, hang up
                    with self._lock:
                        self.dropped += 1
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(chunk)
