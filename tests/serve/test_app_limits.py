"""Bounded render slots and queue: saturate a real server with slow renders."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from tests.serve.app_support import GreyRenderer, make_served

from atlas.errors import InvalidInput, Overloaded
from atlas.serve.app import create_app
from atlas.serve.limits import RenderSlots
from atlas.serve.server import serve_in_thread


def test_slots_queue_and_refuse() -> None:
    async def main() -> None:
        slots = RenderSlots(2, 1, 0.3)
        await slots.acquire()
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        assert slots.stats().waiting == 1
        with pytest.raises(Overloaded, match="queued") as info:
            await slots.acquire()  # the queue (1) is full
        assert info.value.retry_after >= 1
        slots.release()  # hands the slot to the waiter
        await asyncio.wait_for(waiter, 1)
        assert slots.stats().busy == 2 and slots.stats().waiting == 0
        t0 = time.monotonic()
        with pytest.raises(Overloaded, match="within"):
            await slots.acquire()  # waits 0.3 s, nobody frees a slot
        assert 0.25 < time.monotonic() - t0 < 2
        slots.release()
        slots.release()
        assert slots.stats().busy == 0 and slots.stats().refused == 2
        async with slots.slot():
            assert slots.stats().busy == 1
        assert slots.stats().busy == 0

    asyncio.run(main())
    with pytest.raises(InvalidInput):
        RenderSlots(0, 1, 1.0)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    s = make_served(
        tmp_path_factory.mktemp("app-limits"),
        render_concurrency=2,
        queue_depth=2,
        queue_wait_s=10.0,
    )
    renderer = GreyRenderer(delay_s=2.0)
    app = create_app(s.ctx, renderer=renderer)
    with serve_in_thread(app) as url:
        yield url, renderer, app, s.h
    s.ctx.close()


def test_saturated_server_answers_503_with_retry_after(slow_server) -> None:
    url, renderer, app, h = slow_server
    with httpx.Client(base_url=url, timeout=30) as client:
        sid = client.get("/api/series", headers=h("all")).json()["items"][0]["series_id"]
    results: list[httpx.Response] = []
    lock = threading.Lock()

    start = threading.Barrier(10)

    def fetch(i: int) -> None:
        start.wait()
        # distinct tiles (distinct window), so the cache cannot answer any of them
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.get(f"/api/series/{sid}/tiles/axial/0/{i % 16}/0/0.png",
                      params={"window": f"{100 + i},40"}, headers=h("all"))  # fmt: skip
        with lock:
            results.append(r)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    # 2 render at once and 2 wait: 4 served, 6 refused at once
    assert codes.count(200) == 4 and codes.count(503) == 6, codes
    refused = [r for r in results if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"] == "overloaded" for r in refused)
    assert renderer.peak == 2
    # the server is still healthy and serves again once the load is gone
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get(f"/api/series/{sid}/tiles/axial/0/1/0/0.png", headers=h("all"))
        assert r.status_code == 200
    stats = app.state.slots.stats()
    assert stats.busy == 0 and stats.waiting == 0 and stats.refused >= 6
