"""The latency proxy: bytes pass unchanged, every request is held for the delay, for every client.

The delay is checked as a lower bound only (a request cannot come back sooner than the delay
it was held for); no upper bounds, which would depend on the machine's load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import numpy as np
import pytest
import s3fs
import zarr
from tests.stores import s3_store

from atlas.errors import InvalidInput
from atlas.storage import Store
from atlas.testing.latency_proxy import LatencyProxy, ProxyServer
from atlas.testing.seaweed import SeaweedS3

DELAY = 0.05


def test_in_process_server_forwards_and_counts_requests() -> None:
    async def scenario() -> tuple[list[bytes], list[float], object]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.readline():
                writer.write(data.upper())
                await writer.drain()
            writer.close()

        target = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = target.sockets[0].getsockname()[1]
        proxy = ProxyServer(f"127.0.0.1:{port}", DELAY)
        await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        replies, times = [], []
        for line in (b"first\n", b"second\n", b"third\n"):
            start = time.perf_counter()
            writer.write(line)
            await writer.drain()
            replies.append(await reader.readline())
            times.append(time.perf_counter() - start)
        writer.close()
        await proxy.close()
        target.close()
        return replies, times, proxy.stats

    replies, times, stats = asyncio.run(scenario())
    assert replies == [b"FIRST\n", b"SECOND\n", b"THIRD\n"]
    assert min(times) >= DELAY  # each request was held for the delay
    assert stats.connections == 1 and stats.requests == 3  # type: ignore[attr-defined]
    assert stats.bytes_up == stats.bytes_down == len(b"first\nsecond\nthird\n")  # type: ignore[attr-defined]


def test_s3_clients_through_the_proxy(seaweed: SeaweedS3) -> None:
    with LatencyProxy(seaweed.endpoint_url, DELAY) as proxy:
        assert proxy.pid is not None and proxy.endpoint_url.startswith("http://127.0.0.1:")
        # s3fs (signed requests through the proxy's address)
        kwargs = seaweed.s3fs_kwargs()
        kwargs["client_kwargs"] = {**kwargs["client_kwargs"], "endpoint_url": proxy.endpoint_url}
        fs = s3fs.S3FileSystem(**kwargs, skip_instance_cache=True, use_listings_cache=False)
        key = f"atlas/proxy-{uuid.uuid4().hex[:8]}.bin"
        payload = np.random.default_rng(0).bytes(1 << 20)  # several TCP segments
        fs.pipe(key, payload)
        start = time.perf_counter()
        assert fs.cat(key) == payload
        assert time.perf_counter() - start >= DELAY

        # zarr-python and tensorstore through an Atlas store whose endpoint is the proxy
        store = s3_store(seaweed)
        far = Store(dataclasses.replace(store.location, endpoint=proxy.endpoint_url))

        data = np.arange(32 * 32, dtype=np.int16).reshape(32, 32)
        zarr.create_array(store.zarr_store(), name="a", data=data, chunks=(16, 16))
        arr = zarr.open_array(far.zarr_store(), path="a", mode="r")
        np.testing.assert_array_equal(arr[:], data)
        ts = far.open_tensorstore(
            {"driver": "zarr3", "kvstore": far.kvstore_spec("a")}, read=True, open=True
        )
        np.testing.assert_array_equal(ts.read().result(), data)
        far.close()
        store.close()
    stats = proxy.stats
    assert stats is not None
    assert stats.connections >= 2 and stats.requests >= 6
    assert stats.bytes_up > len(payload) and stats.bytes_down > len(payload)


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="port"):
        LatencyProxy("127.0.0.1")
    with pytest.raises(InvalidInput, match="delay"):
        LatencyProxy("127.0.0.1:9000", -1.0)
