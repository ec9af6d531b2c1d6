"""A Reader pickles as its stores and options, without secrets, and reopens in another process."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest
from tests.read.read_study import IMAGE, Written, write_study
from tests.stores import s3_store

from atlas.read import ImageRef, Reader, ReadRequest, Region

pytestmark = pytest.mark.s3

REGION = Region((2, 3, 4), (10, 19, 20))


def read_in_child(payload: bytes) -> tuple[int, bytes, int]:
    """Unpickle a reader in a spawned process and read one patch with it."""
    reader = pickle.loads(payload)
    patch = reader.read(ReadRequest(ImageRef("site", IMAGE), REGION))
    return os.getpid(), patch.data.tobytes(), reader.concurrency_for("site")


@pytest.fixture(scope="module")
def remote_study(seaweed) -> Written:
    return write_study(s3_store(seaweed, site="site"), seed=4)


@pytest.mark.parametrize("engine", ["tensorstore", "zarr"])
def test_reader_pickles_without_secrets_and_reads_in_a_spawned_process(
    seaweed, remote_study: Written, engine: str
) -> None:
    reader = Reader({"site": remote_study.store}, engine=engine, fill=-1, concurrency=None)
    here = reader.read(ReadRequest(ImageRef("site", IMAGE), REGION))  # handles open here
    payload = pickle.dumps(reader)
    secret = seaweed.admin.secret_key.encode()
    assert secret not in payload
    assert seaweed.admin.access_key.encode() not in payload
    assert remote_study.store.location.secret_env.encode() in payload  # only its name travels
    assert len(payload) < 4096  # stores and options, no open handle or cache
    copy = pickle.loads(payload)
    assert copy.options() == reader.options() and copy.stores == reader.stores
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pid, data, in_flight = pool.apply(read_in_child, (payload,))
    assert pid != os.getpid()
    np.testing.assert_array_equal(
        np.frombuffer(data, dtype=here.data.dtype).reshape(here.data.shape), here.data
    )
    np.testing.assert_array_equal(here.data, remote_study.data[REGION.slices()])
    assert in_flight >= 16
