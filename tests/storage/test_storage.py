"""The storage layer: URLs, wrappers and failure paths (the store suite is in test_store_suite)."""

from __future__ import annotations

import os
import time

import pytest
from tests.stores import s3_store

from atlas.errors import (
    ConfigError,
    Forbidden,
    InjectedFault,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from atlas.storage import (
    FaultConfig,
    LatencyConfig,
    RetryPolicy,
    Timeouts,
    open_store,
    parse_url,
)


class TestUrls:
    def test_local_paths(self, tmp_path) -> None:
        loc = parse_url(tmp_path / "data")
        assert loc.scheme == "file" and loc.root == str(tmp_path / "data")
        assert parse_url(f"file://{tmp_path}").root == str(tmp_path)

    def test_s3_with_query_options(self) -> None:
        loc = parse_url("s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1&key_env=K")
        assert (loc.bucket, loc.prefix, loc.endpoint, loc.region, loc.key_env) == (
            "bucket",
            "a/b",
            "http://127.0.0.1:9000",
            "eu-west-1",
            "K",
        )
        assert loc.url == "s3://bucket/a/b"

    @pytest.mark.parametrize(
        "url, match",
        [
            ("", "empty store URL"),
            ("gs://bucket/x", "unsupported store URL scheme"),
            ("s3:///nobucket", "no bucket"),
            ("s3://b/x?colour=red", "unknown S3 URL option"),
            ("s3://b/x?endpoint=ftp://h", "must be an http"),
            ("memory://", "need a name"),
            ("memory://a/../b", r"may not contain '\.\.'"),
            ("file://somehost/data", "names a host"),
        ],
    )
    def test_bad_urls(self, url: str, match: str) -> None:
        with pytest.raises(InvalidInput, match=match):
            parse_url(url)

    def test_location_json_round_trip(self) -> None:
        loc = parse_url("s3://b/p", endpoint="http://127.0.0.1:1", site="x")
        from atlas.storage import StoreLocation

        assert StoreLocation.from_dict(loc.to_dict()) == loc


class TestWrappers:
    def test_latency_is_added_per_request(self) -> None:
        store = open_store("memory://lat", latency=LatencyConfig(base=0.05))
        t0 = time.perf_counter()
        store.write_bytes("k", b"v")
        store.read_bytes("k")
        assert time.perf_counter() - t0 >= 0.1

    def test_transient_faults_are_retried(self) -> None:
        store = open_store(
            "memory://flaky",
            faults=FaultConfig(fail_first=2),
            retry=RetryPolicy(attempts=4, base_delay=0.001),
        )
        store.write_bytes("k", b"v")
        assert store.read_bytes("k") == b"v"
        assert store.zarr_store().retries == 4  # 2 for the write, 2 for the read

    def test_persistent_faults_surface_after_bounded_retries(self) -> None:
        store = open_store(
            "memory://broken",
            faults=FaultConfig(probability=1.0, ops=frozenset({"get"})),
            retry=RetryPolicy(attempts=3, base_delay=0.001),
        )
        store.write_bytes("k", b"v")
        with pytest.raises(InjectedFault, match="injected fault on get 'k'"):
            store.read_bytes("k")
        assert store.zarr_store().retries == 2

    def test_no_retry_on_not_found(self) -> None:
        store = open_store("memory://nf", retry=RetryPolicy(attempts=5, base_delay=0.001))
        with pytest.raises(NotFound):
            store.read_bytes("absent")
        assert store.zarr_store().retries == 0

    def test_backoff_grows_and_is_capped(self) -> None:
        import random

        policy = RetryPolicy(base_delay=0.1, max_delay=0.3, multiplier=2)
        rng = random.Random(0)
        caps = [max(policy.delay(a, rng) for _ in range(200)) for a in (1, 2, 3, 6)]
        assert caps[0] <= 0.1 < caps[1] <= 0.2 < caps[2] <= 0.3
        assert caps[3] <= 0.3

    def test_corruption_injection_changes_bytes(self) -> None:
        store = open_store("memory://corrupt", faults=FaultConfig(corrupt=True))
        store.write_bytes("k", b"0123456789abcdef")
        assert store.read_bytes("k") != b"0123456789abcdef"


class TestLocalFailures:
    def test_file_in_the_way(self, tmp_path) -> None:
        (tmp_path / "f").write_text("not a directory")
        store = open_store(tmp_path / "f" / "store")
        with pytest.raises(InvalidInput, match="a file is in the way"):
            store.write_bytes("k", b"v")

    def test_missing_directory_when_not_creating(self, tmp_path) -> None:
        with pytest.raises(NotFound, match="does not exist"):
            open_store(tmp_path / "absent").ensure_reachable()


@pytest.mark.s3
class TestS3Failures:
    def test_wrong_secret_is_forbidden_and_names_site(self, seaweed) -> None:
        from atlas.testing.seaweed import S3Credentials

        bad = S3Credentials(seaweed.admin.access_key, "wrong-secret")
        store = s3_store(seaweed, creds=bad, site="rotterdam")
        with pytest.raises(Forbidden, match="site 'rotterdam'") as info:
            store.ensure_reachable()
        assert "wrong-secret" not in str(info.value)
        with pytest.raises(Forbidden):
            store.write_bytes("k", b"v")

    def test_read_only_identity_cannot_write(self, seaweed) -> None:
        writer = s3_store(seaweed)
        writer.write_bytes("k", b"v")
        reader_view = s3_store(seaweed, creds=seaweed.readonly, prefix=writer.location.prefix)
        assert reader_view.read_bytes("k") == b"v"
        with pytest.raises(Forbidden, match="refused to set"):
            reader_view.write_bytes("k2", b"v")
        # a refused delete must raise, never pass silently (erasure depends on it)
        with pytest.raises(Forbidden, match="refused to delete"):
            reader_view.delete("k")
        assert writer.read_bytes("k") == b"v"

    def test_missing_bucket_is_not_found(self, seaweed) -> None:
        store = s3_store(seaweed, bucket="no-such-bucket")
        with pytest.raises(NotFound, match="bucket 'no-such-bucket' does not exist"):
            store.ensure_reachable()

    def test_dead_endpoint_fails_fast(self) -> None:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        os.environ["ATLAS_DEAD_KEY"] = "k"
        os.environ["ATLAS_DEAD_SECRET"] = "s"
        store = open_store(
            "s3://atlas/x",
            endpoint=f"http://127.0.0.1:{port}",
            key_env="ATLAS_DEAD_KEY",
            secret_env="ATLAS_DEAD_SECRET",
            site="offline",
            timeouts=Timeouts(connect=1.0, read=2.0, client_attempts=1),
            retry=RetryPolicy(attempts=2, base_delay=0.01),
        )
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable, match=r"site 'offline'.*unreachable"):
            store.read_bytes("k")
        with pytest.raises(StoreUnavailable):
            store.ensure_reachable()
        assert time.perf_counter() - t0 < 30

    def test_missing_credentials_variable(self, seaweed) -> None:
        store = open_store(
            "s3://atlas/x",
            endpoint=seaweed.endpoint_url,
            key_env="ATLAS_UNSET_1",
            secret_env="ATLAS_UNSET_2",
        )
        with pytest.raises(ConfigError, match="ATLAS_UNSET_1, ATLAS_UNSET_2"):
            store.read_bytes("k")

    def test_tensorstore_spec_reads_same_bytes(self, seaweed) -> None:
        store = s3_store(seaweed)
        store.write_bytes("blob", b"tensorstore sees this")
        kv = store.open_kvstore()
        assert kv.read("blob").result().value == b"tensorstore sees this"
        assert (
            "AWS_SECRET_ACCESS_KEY" not in os.environ
            or os.environ["AWS_SECRET_ACCESS_KEY"] != seaweed.admin.secret_key
        )

    def test_tensorstore_keeps_sites_credentials_apart(self, seaweed_sites) -> None:
        stores = [s3_store(server, site=server.name) for server in seaweed_sites[:2]]
        for i, store in enumerate(stores):
            store.write_bytes("who", f"site {i}".encode())
        handles = [store.open_kvstore() for store in stores]
        for i, kv in enumerate(handles):
            assert kv.read("who").result().value == f"site {i}".encode()

    def test_memory_store_refuses_tensorstore(self) -> None:
        with pytest.raises(InvalidInput, match="memory:// stores live inside one Python process"):
            open_store("memory://x").kvstore_spec()
