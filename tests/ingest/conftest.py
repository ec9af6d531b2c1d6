"""Fixtures for every ingest test."""

from __future__ import annotations

import pytest

#: the site key pseudonyms are derived from, as the ingest test modules name it
SITE_SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SITE_SECRET = "test-site-key-not-for-production-0123456789"


@pytest.fixture(autouse=True)
def site_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The site key in the environment (under ``ATLAS_TEST_SITE_SECRET``) for each test."""
    monkeypatch.setenv(SITE_SECRET_ENV, SITE_SECRET)
