"""Atlas's store suite (:mod:`atlas.testing.store_tests`) on each backend: local, memory, S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests.stores import s3_store

from atlas.storage import Store, open_store
from atlas.testing.store_tests import StoreSuite


class TestLocalStore(StoreSuite):
    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        return open_store(tmp_path / "store", site="test-site")


class TestMemoryStore(StoreSuite):
    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        return open_store(f"memory://test-{uuid.uuid4().hex[:10]}", site="test-site")


@pytest.mark.s3
class TestS3Store(StoreSuite):
    def make_store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        return s3_store(request.getfixturevalue("seaweed"))
