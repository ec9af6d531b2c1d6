"""pytest fixtures that run real SeaweedFS S3 servers on loopback.

Enable them in any project with::

    # conftest.py
    pytest_plugins = ["atlas.testing.pytest_plugin"]

Fixtures (all session-scoped, started on first use, stopped at the end of the session even
when tests fail):

- ``seaweed``: one :class:`~atlas.testing.seaweed.SeaweedS3` with buckets ``atlas`` and
  ``atlas-empty``.
- ``seaweed_sites``: three independent servers named ``site-a``, ``site-b``, ``site-c``, each
  with bucket ``atlas`` (started concurrently).
- ``seaweed_cluster``: a :class:`~atlas.testing.seaweed.SeaweedCluster` (master, two
  replicating volume servers, filer, S3 gateway) with bucket ``atlas``.

Tests using them are skipped, with an install hint, when the ``weed`` executable is missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from atlas.errors import NotFound
from atlas.testing.seaweed import SeaweedCluster, SeaweedS3, find_weed

__all__ = ["seaweed", "seaweed_cluster", "seaweed_sites"]

SITE_NAMES = ("site-a", "site-b", "site-c")


def _require_weed() -> None:
    """Skip the requesting test when SeaweedFS is not installed."""
    try:
        find_weed()
    except NotFound as exc:
        pytest.skip(str(exc))


def _stop_all(servers: Sequence[SeaweedS3 | SeaweedCluster]) -> None:
    """Stop servers concurrently (each SIGTERM takes about a second)."""
    if not servers:
        return
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.stop(), servers))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One running SeaweedFS S3 server with buckets ``atlas`` and ``atlas-empty``."""
    _require_weed()
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"), buckets=["atlas", "atlas-empty"])
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SeaweedS3]]:
    """Three independent S3 servers (``site-a``, ``site-b``, ``site-c``), bucket ``atlas`` each."""
    _require_weed()
    sites = [
        SeaweedS3(tmp_path_factory.mktemp(name), buckets=["atlas"], name=name)
        for name in SITE_NAMES
    ]
    try:
        with ThreadPoolExecutor(max_workers=len(sites)) as pool:
            futures = [pool.submit(site.start) for site in sites]
            for future in futures:
                future.result()  # re-raises the first startup failure
        yield sites
    finally:
        _stop_all(sites)


@pytest.fixture(scope="session")
def seaweed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedCluster]:
    """A multi-process SeaweedFS cluster (replication ``001`` over two volume servers)."""
    _require_weed()
    cluster = SeaweedCluster(tmp_path_factory.mktemp("seaweed-cluster"), buckets=["atlas"])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
