"""The store test suite: the contract every Atlas storage backend must keep.

Like zarr-python's ``StoreTests``, it is a class a backend's tests subclass. Implement
:meth:`StoreSuite.make_store` to return a fresh, empty :class:`~atlas.storage.Store` of the
backend, and every test below runs on it: bytes, listing, deletes, child handles, zarr arrays,
pickling and reopening in another process, the fsspec view, the probe, and the conditional
writes (create-if-absent, compare-and-swap, their races, bad input, retried and persistent
faults)::

    # tests/storage/test_store_suite.py
    from atlas.testing.store_tests import StoreSuite

    class TestMyBackend(StoreSuite):
        def make_store(self, request, tmp_path):
            return open_store("myscheme://bucket/" + uuid.uuid4().hex)

Backend-specific behaviour (local lock files, S3 permissions and lost answers) is tested
beside the backend's own tests.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import zarr

from atlas.errors import InjectedFault, InvalidInput, NotFound
from atlas.storage import FaultConfig, LatencyConfig, RetryPolicy, RetryStore, Store

__all__ = ["PROCESSES", "THREADS", "StoreSuite", "assert_one_winner", "count_up", "race"]

THREADS = 8
PROCESSES = 4
T = TypeVar("T")


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0..n-1)`` on ``n`` threads released together; their results in order."""
    barrier = threading.Barrier(n)

    def one(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def assert_one_winner(store: Store, key: str, results: list[bool], payloads: list[bytes]) -> None:
    """Exactly one writer won, and the key holds its bytes."""
    assert results.count(True) == 1, results
    assert store.read_bytes(key) == payloads[results.index(True)]


def count_up(store: Store, key: str, times: int) -> int:
    """Add ``times`` to the counter at ``key`` by read → compare-and-swap; returns swaps lost."""
    lost = 0
    for _ in range(times):
        while True:
            data, version = store.read_versioned(key)
            if store.put_if_match(key, str(int(data) + 1).encode(), version):
                break
            lost += 1
    return lost


def _read_in_child(store: Store, key: str, queue: Any) -> None:
    queue.put(store.read_bytes(key))


class StoreSuite:
    """Tests every backend passes; subclass it and implement :meth:`make_store`."""

    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        """A fresh, empty store of the backend under test (override)."""
        raise NotImplementedError

    @pytest.fixture
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        """The store under test: fresh and empty for each test."""
        return self.make_store(request, tmp_path)

    # -- bytes, listing, zarr, fsspec --------------------------------------------------------
    def test_bytes_round_trip(self, store: Store) -> None:
        store.write_bytes("a/b/c.bin", b"\x00\x01payload")
        assert store.read_bytes("a/b/c.bin") == b"\x00\x01payload"
        assert store.exists("a/b/c.bin")
        assert not store.exists("a/b/missing")

    def test_missing_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="no object 'nope'"):
            store.read_bytes("nope")

    def test_list_and_delete(self, store: Store) -> None:
        for k in ("p/1", "p/2", "p/sub/3", "q/4"):
            store.write_bytes(k, k.encode())
        assert store.list("p/") == ["p/1", "p/2", "p/sub/3"]
        store.delete("p/1")
        assert store.list("p/") == ["p/2", "p/sub/3"]
        assert store.delete_prefix("p") == 2
        assert store.list() == ["q/4"]
        with pytest.raises(InvalidInput):
            store.delete_prefix("")

    def test_stat_and_read_range(self, store: Store) -> None:
        data = bytes(range(256)) * 40
        store.write_bytes("s/obj.bin", data)
        st = store.stat("s/obj.bin")
        assert st.size == len(data) and st.version
        assert store.stat("s/obj.bin") == st  # unchanged object, same version
        assert store.read_range("s/obj.bin", 0, 10) == data[:10]
        assert store.read_range("s/obj.bin", 5000, len(data)) == data[5000:]
        assert store.read_range("s/obj.bin", 7, 7) == b""
        store.write_bytes("s/obj.bin", data[::-1])
        assert store.stat("s/obj.bin").version != st.version
        with pytest.raises(NotFound, match="no object 's/missing'"):
            store.stat("s/missing")
        with pytest.raises(NotFound):
            store.read_range("s/missing", 0, 4)
        with pytest.raises(NotFound):
            store.stat("s")  # a prefix, not an object
        for bad in ("../s/obj.bin", "/s/obj.bin", "s//obj.bin"):
            with pytest.raises(InvalidInput):
                store.stat(bad)
            with pytest.raises(InvalidInput):
                store.read_range(bad, 0, 1)
        with pytest.raises(InvalidInput):
            store.read_range("s/obj.bin", 4, 2)

    def test_child_store_sees_prefix(self, store: Store) -> None:
        store.write_bytes("x/y/z", b"1")
        child = store.child("x")
        assert child.read_bytes("y/z") == b"1"
        assert child.url.endswith("/x")

    def test_zarr_array_round_trip(self, store: Store) -> None:
        data = np.arange(24, dtype="int16").reshape(2, 3, 4)
        arr = zarr.create_array(store.zarr_store(), name="arr", shape=data.shape, dtype="int16")
        arr[:] = data
        back = zarr.open_array(store.zarr_store(), path="arr", mode="r")
        np.testing.assert_array_equal(back[:], data)

    def test_pickle_reopens_same_data(self, store: Store) -> None:
        store.write_bytes("k", b"v")
        clone = pickle.loads(pickle.dumps(store))
        assert clone == store
        assert clone.read_bytes("k") == b"v"
        # the pickle holds names of credential variables, never their values
        raw = pickle.dumps(store)
        if store.uses_credentials:
            for var in (store.location.key_env, store.location.secret_env):
                assert os.environ[var].encode() not in raw
                assert var.encode() in raw

    def test_fsspec_view_sees_same_objects(self, store: Store) -> None:
        store.write_bytes("dir/obj.bin", b"via zarr store")
        fs = store.fs
        assert fs.cat_file(store.fs_path("dir/obj.bin")) == b"via zarr store"
        fs.pipe_file(store.fs_path("dir/other.bin"), b"via fsspec")
        assert store.read_bytes("dir/other.bin") == b"via fsspec"

    def test_probe(self, store: Store) -> None:
        result = store.probe()
        assert result.ok
        assert result.write_ms >= 0 and result.read_ms >= 0
        assert store.list(".atlas-probe/") == []

    def test_handle_reopens_in_another_process(self, store: Store) -> None:
        if store.process_local:
            pytest.skip("the store lives in this process only")
        store.write_bytes("shared", b"from parent")
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_read_in_child, args=(store, "shared", queue))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert queue.get(timeout=5) == b"from parent"

    # -- conditional writes ------------------------------------------------------------------
    def test_put_if_absent_creates_once(self, store: Store) -> None:
        assert store.put_if_absent("idx/pointer", b"first") is True
        assert store.put_if_absent("idx/pointer", b"second") is False
        assert store.read_bytes("idx/pointer") == b"first"
        # nothing else is left behind (no temporary or lock files)
        assert store.list() == ["idx/pointer"]

    def test_put_if_absent_race_has_one_winner(self, store: Store) -> None:
        payloads = [f"writer {i}".encode() for i in range(THREADS)]
        results = race(THREADS, lambda i: store.put_if_absent("lock", payloads[i]))
        assert_one_winner(store, "lock", results, payloads)
        assert store.list() == ["lock"]

    def test_compare_and_swap(self, store: Store) -> None:
        store.write_bytes("manifest", b"v1")
        data, token = store.read_versioned("manifest")
        assert data == b"v1" and isinstance(token, str) and token
        assert store.read_versioned("manifest")[1] == token  # stable while unchanged

        assert store.put_if_match("manifest", b"v2", token) is True
        data2, token2 = store.read_versioned("manifest")
        assert data2 == b"v2" and token2 != token

        # a writer holding the old token lost the race and changes nothing
        assert store.put_if_match("manifest", b"stale", token) is False
        assert store.read_bytes("manifest") == b"v2"
        assert store.put_if_match("manifest", b"v3", token2) is True
        assert store.read_bytes("manifest") == b"v3"
        assert store.list() == ["manifest"]

    def test_stale_token_after_another_writer(self, store: Store) -> None:
        store.write_bytes("m", b"base")
        _, mine = store.read_versioned("m")
        _, theirs = store.read_versioned("m")
        assert store.put_if_match("m", b"theirs", theirs) is True
        assert store.put_if_match("m", b"mine", mine) is False
        assert store.read_bytes("m") == b"theirs"

    def test_version_none_means_only_if_absent(self, store: Store) -> None:
        assert store.put_if_match("k", b"new", None) is True
        assert store.put_if_match("k", b"again", None) is False
        assert store.read_bytes("k") == b"new"

    def test_put_if_match_on_missing_key_is_false(self, store: Store) -> None:
        store.write_bytes("k", b"x")
        _, token = store.read_versioned("k")
        store.delete("k")
        assert store.put_if_match("k", b"y", token) is False
        assert store.put_if_match("no/such/dir/k", b"y", token) is False
        assert not store.exists("k")
        assert store.list("no/") == []

    def test_cas_race_loses_no_update(self, store: Store) -> None:
        store.write_bytes("counter", b"0")
        race(THREADS, lambda i: count_up(store, "counter", 1))
        assert store.read_bytes("counter") == str(THREADS).encode()
        assert store.list() == ["counter"]

    def test_read_versioned_missing_key_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="no object 'absent'"):
            store.read_versioned("absent")

    @pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "./a", "a/../b", "..", "a\\b"])
    def test_bad_keys_are_invalid(self, store: Store, key: str) -> None:
        with pytest.raises(InvalidInput):
            store.put_if_absent(key, b"x")
        with pytest.raises(InvalidInput):
            store.put_if_match(key, b"x", "token")
        with pytest.raises(InvalidInput):
            store.read_versioned(key)

    def test_bad_version_and_data_are_invalid(self, store: Store) -> None:
        with pytest.raises(InvalidInput, match="version must be"):
            store.put_if_match("k", b"x", 123)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="data must be bytes"):
            store.put_if_absent("k", "text")  # type: ignore[arg-type]

    def test_transient_faults_are_retried(self, store: Store) -> None:
        flaky = Store(
            store.location,
            faults=FaultConfig(fail_first=1),
            latency=LatencyConfig(base=0.001),
            retry=RetryPolicy(attempts=3, base_delay=0.001),
        )
        assert flaky.put_if_absent("k", b"v") is True
        data, token = flaky.read_versioned("k")
        assert data == b"v"
        assert flaky.put_if_match("k", b"w", token) is True
        assert flaky.put_if_absent("k", b"again") is False
        assert store.read_bytes("k") == b"w"
        top = flaky.zarr_store()
        assert isinstance(top, RetryStore)
        assert top.retries == 2  # one injected fault per (op, key): set, get

    def test_persistent_faults_surface(self, store: Store) -> None:
        broken = Store(
            store.location,
            faults=FaultConfig(probability=1.0),
            retry=RetryPolicy(attempts=2, base_delay=0.001),
        )
        with pytest.raises(InjectedFault, match="injected fault on set 'k'"):
            broken.put_if_absent("k", b"v")
        with pytest.raises(InjectedFault, match="injected fault on get 'k'"):
            broken.read_versioned("k")
        assert not store.exists("k")
