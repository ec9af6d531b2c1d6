"""Shared test configuration and fixtures.

Real SeaweedFS S3 servers come from Atlas's own pytest plugin; ``any_store`` runs a test on
every kind of store. Builders shared by several test modules live in plain helper modules
(``tests/stores.py``, ``tests/source_truth.py``, ``tests/ingest/geometry_series.py``), never
in test modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.stores import STORE_KINDS, make_store

from atlas.storage import Store

pytest_plugins = ["atlas.testing.pytest_plugin"]


@pytest.fixture(params=STORE_KINDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every kind of store in turn: a fresh, empty location for each test."""
    yield make_store(request.param, request, tmp_path)
