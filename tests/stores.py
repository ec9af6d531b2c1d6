"""Store builders shared by the test modules (the ``any_store`` fixture in ``conftest.py`` uses
them to run the same tests on local, memory and S3)."""

from __future__ import annotations

import os
import uuid

import pytest

from atlas.storage import Store, open_store

KEY_ENV = "ATLAS_TEST_S3_KEY"
SECRET_ENV = "ATLAS_TEST_S3_SECRET"
STORE_KINDS = ["local", "memory", "s3"]


def s3_store(
    server,
    bucket: str = "atlas",
    creds=None,
    site: str = "test-site",
    prefix: str | None = None,
    **kw,
) -> Store:
    """A store on a SeaweedFS test server with credentials passed through env variables."""
    creds = creds or server.admin
    tag = uuid.uuid4().hex[:8]
    key_env, secret_env = f"{KEY_ENV}_{tag}", f"{SECRET_ENV}_{tag}"
    os.environ[key_env] = creds.access_key
    os.environ[secret_env] = creds.secret_key
    return open_store(
        f"s3://{bucket}/{prefix or 't-' + uuid.uuid4().hex[:10]}",
        endpoint=server.endpoint_url,
        key_env=key_env,
        secret_env=secret_env,
        site=site,
        **kw,
    )


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path) -> Store:
    if kind == "local":
        return open_store(tmp_path / "store", site="test-site")
    if kind == "memory":
        return open_store(f"memory://test-{uuid.uuid4().hex[:10]}", site="test-site")
    server = request.getfixturevalue("seaweed")
    return s3_store(server)
