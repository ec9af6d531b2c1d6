"""tensorstore gets each site's S3 credentials through its own spec, never the environment."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import zarr
from tests.stores import s3_store

pytestmark = pytest.mark.s3

ROUNDS = 5


@contextmanager
def _environment_guard() -> Iterator[list[str]]:
    """Record (and refuse) every change to ``os.environ`` inside the block."""
    changes: list[str] = []
    environ = type(os.environ)
    saved = environ.__setitem__, environ.__delitem__

    def refuse(self: Any, key: str, *value: Any) -> None:
        changes.append(key)
        raise AssertionError(f"os.environ[{key!r}] was changed")

    environ.__setitem__ = refuse  # type: ignore[method-assign,assignment]
    environ.__delitem__ = refuse  # type: ignore[method-assign,assignment]
    try:
        yield changes
    finally:
        environ.__setitem__, environ.__delitem__ = saved  # type: ignore[method-assign]


def test_two_sites_read_concurrently_without_touching_the_environment(
    seaweed_sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = seaweed_sites[:2]
    assert servers[0].admin.secret_key != servers[1].admin.secret_key
    stores = [s3_store(server, site=server.name) for server in servers]
    for i, store in enumerate(stores):
        store.write_bytes("who", f"site {i}".encode())
        arr = zarr.create_array(store.zarr_store(), name="arr", shape=(8, 8), dtype="int16")
        arr[:] = np.full((8, 8), i + 1, dtype="int16")
        # tensorstore's stall watchdog is process-wide (decision 0030): set before the check
        store.tensorstore_context()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)

    def read(i: int) -> list[tuple[bytes, int]]:
        store = stores[i]
        out = []
        for _ in range(ROUNDS):
            kv = store.open_kvstore()
            array = store.open_tensorstore(
                {"driver": "zarr3", "kvstore": store.kvstore_spec("arr")}, read=True, open=True
            )
            out.append((kv.read("who").result().value, int(array.read().result().max())))
        return out

    with _environment_guard() as changes, ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(read, [0, 1, 0, 1]))

    for i, got in zip([0, 1, 0, 1], results, strict=True):
        assert got == [(f"site {i}".encode(), i + 1)] * ROUNDS
    assert changes == []
    assert dict(os.environ) == before
    for store in stores:
        spec = json.dumps(store.kvstore_spec())
        assert store.backend.credentials()[1] not in spec  # type: ignore[index]
        store.close()


def test_credentials_file_is_private_and_removed_at_close(seaweed) -> None:
    store = s3_store(seaweed)
    creds = store.kvstore_spec()["aws_credentials"]
    assert creds["type"] == "profile"
    path = creds["credentials_file"]
    folder = os.path.dirname(path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for name in (path, creds["config_file"]):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    store.write_bytes("k", b"v")
    assert store.open_kvstore().read("k").result().value == b"v"
    store.close()
    assert not os.path.exists(folder)
    # the handle makes a new file when it is used again
    assert store.open_kvstore().read("k").result().value == b"v"
    store.close()


def test_anonymous_store_names_no_credentials(seaweed) -> None:
    from atlas.storage import open_store

    store = open_store("s3://atlas/public", endpoint=seaweed.endpoint_url, anonymous=True)
    assert store.kvstore_spec()["aws_credentials"] == {"type": "anonymous"}
