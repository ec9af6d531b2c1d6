"""Reads from SeaweedFS sites: two sites with different keys never mix; a dead site fails alone."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tests.read.read_study import IMAGE, LAYOUT, SHAPE, Written, volume, write_study
from tests.stores import s3_store

from atlas.errors import AtlasError, CorruptData, Forbidden, StoreUnavailable
from atlas.ome import write_image
from atlas.read import Engine, ImageRef, Reader, ReadRequest, Region
from atlas.storage import RetryPolicy, Timeouts
from atlas.testing.seaweed import SeaweedS3
from atlas.testing.seaweed.credentials import S3Credentials

pytestmark = pytest.mark.s3

ENGINES = [Engine.TENSORSTORE, Engine.ZARR]
THREADS = 4
ROUNDS = 2
PER_ROUND = 12


@pytest.fixture(scope="module")
def two_sites(seaweed_sites) -> dict[str, Written]:
    """The test image on site-a and site-b (different values, different keys)."""
    a, b = seaweed_sites[:2]
    assert a.admin.secret_key != b.admin.secret_key
    return {
        "site-a": write_study(s3_store(a, site="site-a"), seed=11),
        "site-b": write_study(s3_store(b, site="site-b"), seed=22),
    }


def _mixed_requests(rng: np.random.Generator, n: int = PER_ROUND) -> list[ReadRequest]:
    out = []
    for _ in range(n):
        site = "site-a" if rng.random() < 0.5 else "site-b"
        start = tuple(int(rng.integers(-2, s - 4)) for s in SHAPE)
        out.append(ReadRequest(ImageRef(site, IMAGE), Region(start, tuple(v + 6 for v in start))))
    return out


def _expected(study: Written, region: Region) -> np.ndarray:
    out = np.zeros(region.size, dtype=study.data.dtype)
    src = tuple(slice(max(a, 0), min(b, n))
                for a, b, n in zip(region.start, region.stop, SHAPE, strict=True))  # fmt: skip
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, region.start, strict=True))
    out[dst] = study.data[src]
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_two_sites_read_from_many_threads_never_mix(two_sites, engine) -> None:
    stores = {site: study.store for site, study in two_sites.items()}
    reader = Reader(stores, engine=engine)
    for store in stores.values():  # tensorstore's stall watchdog is process-wide (0030)
        store.tensorstore_context()
    before = dict(os.environ)

    def work(seed: int) -> int:
        rng = np.random.default_rng(seed)
        checked = 0
        for _ in range(ROUNDS):
            reqs = _mixed_requests(rng)
            for req, patch in zip(reqs, reader.read_many(reqs), strict=True):
                want = _expected(two_sites[req.image.site], req.region)
                np.testing.assert_array_equal(patch.data, want, err_msg=str(req))
                checked += 1
        return checked

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        assert sum(pool.map(work, range(THREADS))) == THREADS * ROUNDS * PER_ROUND
    assert dict(os.environ) == before  # credentials never went through the environment
    for site in stores:
        assert reader.concurrency_for(site) >= 16


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wrong_key_fails_for_that_site_only(seaweed_sites, two_sites, engine) -> None:
    server, good = seaweed_sites[1], two_sites["site-b"].store
    wrong = S3Credentials(server.admin.access_key, "not-the-secret")
    bad = s3_store(server, site="site-b", prefix=good.location.prefix, creds=wrong)
    reader = Reader({"site-a": two_sites["site-a"].store, "site-b": bad}, engine=engine)
    region = Region((0, 0, 0), (4, 4, 4))
    with pytest.raises(Forbidden, match="site-b"):
        reader.read(ReadRequest(ImageRef("site-b", IMAGE), region))
    with pytest.raises(Forbidden, match="site-b"):
        reader.read_many([ReadRequest(ImageRef("site-a", IMAGE), region),
                          ReadRequest(ImageRef("site-b", IMAGE), region)])  # fmt: skip
    patch = reader.read(ReadRequest(ImageRef("site-a", IMAGE), region))
    np.testing.assert_array_equal(patch.data, two_sites["site-a"].data[:4, :4, :4])


def test_a_dead_site_raises_store_unavailable_and_the_other_still_reads(
    tmp_path, two_sites
) -> None:
    server = SeaweedS3(tmp_path / "doomed", buckets=["atlas"], name="doomed").start()
    try:
        small = volume(5, (16, 32, 32))
        doomed = Written(s3_store(server, site="doomed"), "d.ome.zarr", small, small)
        write_image(doomed.store, doomed.path, small, spacing=(1, 1, 1), layout=LAYOUT,
                    max_levels=1)  # fmt: skip
        # the reader's handle on the same data: small limits, so the dead site fails fast
        limits = Timeouts(connect=1, read=1, client_attempts=1, operation=3)
        retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)
        prefix = doomed.store.location.prefix
        quick = s3_store(server, site="doomed", prefix=prefix, retry=retry, timeouts=limits)
        stores = {"doomed": quick, "site-a": two_sites["site-a"].store}
        readers = {e: Reader(stores, engine=e, retry=retry) for e in ENGINES}
        first = ReadRequest(ImageRef("doomed", doomed.path), Region((0, 0, 0), (4, 4, 4)))
        for reader in readers.values():  # metadata and arrays open while the site is up
            np.testing.assert_array_equal(reader.read(first).data, doomed.data[:4, :4, :4])
    finally:
        server.kill()
    later = ReadRequest(ImageRef("doomed", doomed.path), Region((10, 20, 20), (14, 30, 30)))
    alive = ReadRequest(ImageRef("site-a", IMAGE), Region((10, 30, 20), (14, 40, 30)))
    for engine, reader in readers.items():
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="doomed") as caught:
            reader.read_many([alive, later])
        assert isinstance(caught.value, AtlasError)
        assert time.monotonic() - t0 < 60, engine  # bounded by the limits, not a hang
        np.testing.assert_array_equal(
            reader.read(alive).data, two_sites["site-a"].data[10:14, 30:40, 20:30]
        )


def test_a_corrupt_chunk_on_a_remote_site_is_named(two_sites) -> None:
    store = two_sites["site-a"].store
    small = volume(9, (16, 32, 32))
    write_image(store, "bad.ome.zarr", small, spacing=(1, 1, 1), layout=LAYOUT, max_levels=1)
    key = "bad.ome.zarr/0/c/0/0/0"
    raw = bytearray(store.read_bytes(key))
    index = np.frombuffer(bytes(raw[-(16 * 8 + 4) : -4]), dtype="<u8").reshape(2, 2, 2, 2)
    offset, nbytes = (int(v) for v in index[1, 0, 1])
    raw[offset + nbytes // 2] ^= 0xFF
    store.write_bytes(key, bytes(raw))
    ref = ImageRef("site-a", "bad.ome.zarr")
    for engine in ENGINES:
        reader = Reader({"site-a": store}, engine=engine)
        with pytest.raises(CorruptData, match=r"'bad\.ome\.zarr' level 0: chunk \(1, 0, 1\).*"
                           r"shard object 'bad\.ome\.zarr/0/c/0/0/0'") as caught:  # fmt: skip
            reader.read(ReadRequest(ref))
        assert caught.value.site == "site-a"
        ok = reader.read(ReadRequest(ref, Region((0, 0, 0), (8, 16, 16))))
        np.testing.assert_array_equal(ok.data, small[:8, :16, :16])
