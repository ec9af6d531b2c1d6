"""Remote stores answer within the site's time limits, even when the endpoint never replies.

A real "silent" server on loopback accepts TCP connections and never sends a byte: the worst
case for clients, which otherwise wait for the operating system to give up (minutes).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from atlas.cli.app import app
from atlas.config import parse_sites
from atlas.errors import ConfigError, StoreUnavailable
from atlas.storage import RetryPolicy, Timeouts, open_store

#: generous: the limits below are 1 s, so an answer takes a few seconds; a hang takes minutes
BOUND_S = 15.0
runner = CliRunner()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)  # held open, never read from or written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILENT_KEY", "silent-key")
    monkeypatch.setenv("SILENT_SECRET", "silent-secret")


def _silent_store(endpoint: str, url: str = "s3://atlas/x"):  # type: ignore[no-untyped-def]
    return open_store(
        url,
        endpoint=endpoint,
        key_env="SILENT_KEY",
        secret_env="SILENT_SECRET",
        site="silent",
        timeouts=Timeouts(connect=1, read=1),
        retry=RetryPolicy(),  # the default policy: 4 attempts, yet within the deadline
    )


def _sites_file(tmp_path, endpoint: str) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[[site]]\nname = "silent"\nstore = "s3://atlas/x"\nendpoint = "{endpoint}"\n'
        'key_env = "SILENT_KEY"\nsecret_env = "SILENT_SECRET"\n'
        "connect_timeout = 1\nread_timeout = 1\n"
    )
    return str(path)


def _timed(fn) -> tuple[BaseException | None, float]:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # returned for the caller to assert on
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def test_store_operations_give_up_within_the_deadline(silent_endpoint, credentials) -> None:
    store = _silent_store(silent_endpoint)
    operations = {
        "read": lambda: store.read_bytes("k"),
        "list": lambda: store.list("prefix/"),
        "write": lambda: store.write_bytes("k", b"x"),
        "conditional write": lambda: store.put_if_absent("k", b"x"),
        "bucket check": store.ensure_reachable,
        "fsspec (DuckDB's path)": lambda: store.fs.cat_file(store.fs_path("k")),
    }
    with ThreadPoolExecutor(max_workers=len(operations)) as pool:  # independent: at once
        outcomes = dict(zip(operations, pool.map(_timed, operations.values()), strict=True))
    for name, (error, seconds) in outcomes.items():
        if name.startswith("fsspec"):
            # the raw fsspec filesystem raises its own timeout, bounded by the same deadline
            assert isinstance(error, TimeoutError | StoreUnavailable), (name, error)
        else:
            assert isinstance(error, StoreUnavailable), (name, error)
            assert "site 'silent'" in str(error) and "did not answer" in str(error), error
        assert seconds < BOUND_S, (name, seconds)
    store.close()


def test_tensorstore_gives_up_within_the_deadline(silent_endpoint, credentials) -> None:
    store = _silent_store(silent_endpoint)
    error, seconds = _timed(store.open_kvstore)
    assert isinstance(error, StoreUnavailable) and "site 'silent'" in str(error), error
    assert seconds < BOUND_S


def test_sites_check_and_query_answer_within_the_timeouts(
    silent_endpoint, credentials, tmp_path
) -> None:
    sites = _sites_file(tmp_path, silent_endpoint)
    t0 = time.monotonic()
    result = runner.invoke(app, ["sites", "check", "--sites", sites])
    assert time.monotonic() - t0 < BOUND_S
    assert result.exit_code == 1
    assert "StoreUnavailable" in result.output and "FAILED" in result.output

    from atlas.config import load_sites
    from atlas.index.catalog import open_atlas

    stores = {s.name: s.store() for s in load_sites(sites)}
    error, seconds = _timed(lambda: open_atlas(stores, purpose="research", strict=True))
    assert isinstance(error, StoreUnavailable) and "did not answer" in str(error), error
    assert seconds < BOUND_S


@pytest.mark.parametrize("field", ["connect_timeout", "read_timeout", "operation_timeout"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "0", "-1", "0.0", "'soon'", "true"])
def test_non_finite_or_non_positive_timeouts_are_refused(field: str, value: str) -> None:
    text = f"[[site]]\nname = 'nl'\nstore = 's3://b/p'\n{field} = {value}\n"
    with pytest.raises(ConfigError) as info:
        parse_sites(text)
    message = str(info.value)
    assert field in message and "'nl'" in message, message


@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -2.0])
def test_timeouts_object_refuses_bad_values(value: float) -> None:
    for field in ("connect", "read", "operation"):
        with pytest.raises(ConfigError, match="finite, positive"):
            Timeouts(**{field: value})
    with pytest.raises(ConfigError):
        RetryPolicy(deadline=value)


def test_client_attempts_are_validated() -> None:
    with pytest.raises(ConfigError, match="client_attempts"):
        parse_sites("[[site]]\nname = 'nl'\nstore = 's3://b/p'\nclient_attempts = 0\n")
    sites = parse_sites(
        "[[site]]\nname = 'nl'\nstore = 's3://b/p'\nclient_attempts = 3\noperation_timeout = 9\n"
    )
    assert sites[0].location.timeouts.client_attempts == 3
    assert sites[0].location.timeouts.deadline == 9.0


@pytest.mark.s3
def test_query_through_duckdb_gives_up_when_the_endpoint_falls_silent(
    seaweed, silent_endpoint, monkeypatch
) -> None:
    """An index opened while the site answered; then its endpoint stops answering."""
    from dataclasses import replace

    from atlas.index.build import build_index
    from atlas.index.catalog import Atlas, open_atlas
    from atlas.privacy import consent
    from atlas.testing.records import generate_site

    monkeypatch.setenv("SILENT_KEY", seaweed.admin.access_key)
    monkeypatch.setenv("SILENT_SECRET", seaweed.admin.secret_key)
    live = open_store(
        "s3://atlas/falls-silent", endpoint=seaweed.endpoint_url, key_env="SILENT_KEY",
        secret_env="SILENT_SECRET", site="silent", timeouts=Timeouts(connect=1, read=1),
    )  # fmt: skip
    generated = generate_site(live, "silent", n_subjects=3, seed=4)
    for collection in generated.collections:
        consent.set_collection_default(live, collection, ["research"])
    build_index(live)
    opened = open_atlas({"silent": live}, purpose="research", strict=True)
    assert opened.images.count().value > 0  # shards read and verified while it answered
    silent = _silent_store(silent_endpoint, live.url)
    site = replace(opened.sites["silent"], store=silent)
    atlas = Atlas({"silent": site}, {}, "research", True)
    error, seconds = _timed(lambda: atlas.images.count())
    assert isinstance(error, StoreUnavailable), error
    assert "site 'silent'" in str(error) and "did not answer" in str(error)
    assert seconds < BOUND_S
    lenient = Atlas({"silent": site}, {}, "research", False).images.count()
    assert lenient.partial and "did not answer" in lenient.missing_sites["silent"]


def test_retry_policy_deadline_bounds_every_attempt_and_wait() -> None:
    """Our own retry wrapper: many attempts allowed, but the deadline ends them (no network)."""
    from atlas.storage import FaultConfig, LatencyConfig

    store = open_store(
        "memory://deadline",
        retry=RetryPolicy(attempts=10_000, base_delay=0.05, max_delay=0.2, deadline=0.6),
        faults=FaultConfig(probability=1.0),  # every attempt fails
    )
    error, seconds = _timed(lambda: store.read_bytes("k"))
    assert isinstance(error, StoreUnavailable) and "within its time limits" in str(error)
    assert "deadline 0.6 s" in str(error) and seconds < 3
    slow = open_store(
        "memory://deadline-slow",
        retry=RetryPolicy(attempts=3, deadline=0.3),
        latency=LatencyConfig(base=5.0),  # one attempt would take 5 s: cancelled at 0.3 s
    )
    error, seconds = _timed(lambda: slow.write_bytes("k", b"x"))
    assert isinstance(error, StoreUnavailable) and seconds < 3
