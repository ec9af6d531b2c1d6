"""Fixtures of the read tests (the images themselves are built in ``read_study.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.read.read_study import Written, write_study

from atlas.storage import open_store


@pytest.fixture(scope="module")
def local_study(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The test image on a local store of site ``local``."""
    root: Path = tmp_path_factory.mktemp("read-local")
    return write_study(open_store(root / "store", site="local"))
