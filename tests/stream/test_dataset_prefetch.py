"""The read-ahead thread (bounded in bytes), the per-site counters and the batch collation."""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import numpy as np
import pytest
import torch

from atlas.errors import InvalidInput, StoreUnavailable
from atlas.stream.collate import collate_samples, to_device
from atlas.stream.prefetch import prefetch
from atlas.stream.report import SiteCounters


def test_prefetch_keeps_order_and_holds_at_most_budget_plus_one() -> None:
    sizes = [10, 30, 5, 50, 20, 1, 1, 40]
    held: list[int] = []
    reads: list[int] = []

    def read(i: int) -> tuple[int, int]:
        reads.append(i)
        return i, sizes[i]

    ahead = prefetch(range(len(sizes)), read, lambda r: r[1], budget=40)
    out = []
    for item in ahead:
        held.append(ahead.held_bytes)
        out.append(item[0])
    assert out == list(range(len(sizes)))
    assert sorted(reads) == reads == list(range(len(sizes)))
    # a read starts only while less than the budget is held: at most budget + one result
    assert ahead.peak_bytes <= 40 + max(sizes)
    assert ahead.peak_bytes >= 40  # it did read ahead


def test_prefetch_reads_ahead_only_to_the_budget() -> None:
    started: list[int] = []
    ahead = prefetch(range(100), lambda i: started.append(i) or i, lambda r: 10, budget=30)
    assert next(ahead) == 0
    # give the producer time to fill up: it stops after 30 bytes are held (+1 in progress)
    for _ in range(2000):
        if len(started) >= 4:
            break
        threading.Event().wait(0.005)
    threading.Event().wait(0.05)
    assert 4 <= len(started) <= 5
    ahead.close()
    assert len(started) <= 6


def test_prefetch_zero_budget_still_progresses() -> None:
    assert list(prefetch(range(5), lambda i: i * 2, lambda r: 1 << 30, budget=0)) == [0, 2, 4, 6, 8]


def test_prefetch_reraises_at_the_failing_item_and_stops() -> None:
    def read(i: int) -> int:
        if i == 3:
            raise StoreUnavailable("site down")
        return i

    ahead = prefetch(range(10), read, lambda r: 1, budget=100)
    got = []
    with pytest.raises(StoreUnavailable):
        for item in ahead:
            got.append(item)
    assert got == [0, 1, 2]
    assert list(ahead) == []


def test_prefetch_rejects_a_bad_budget() -> None:
    with pytest.raises(InvalidInput, match="prefetch budget"):
        prefetch([], lambda i: i, lambda r: 0, budget=-1)


def _add_in_child(counters: SiteCounters) -> None:
    counters.add("b", read=5, bytes=100)


def test_site_counters_are_shared_with_child_processes() -> None:
    counters = SiteCounters(["b", "a"])
    counters.reset(3)
    counters.add("a", read=2, skipped=1, errors=1)
    child = multiprocessing.get_context("fork").Process(target=_add_in_child, args=(counters,))
    child.start()
    child.join(30)
    child = multiprocessing.get_context("fork").Process(target=_add_in_child, args=(counters,))
    child.start()
    child.join(30)
    report = counters.report()
    assert report.epoch == 3
    assert report.sites["a"].read == 2 and report.sites["a"].skipped == 1
    assert report.sites["b"].read == 10 and report.sites["b"].bytes == 200
    assert report.failed_sites == ["a"] and report.read == 12 and report.skipped == 1
    # pickled outside a process start it is a fresh copy, not a share
    copy = pickle.loads(pickle.dumps(counters))
    assert copy.report().read == 0
    counters.reset(4)
    assert counters.report().read == 0 and counters.report().epoch == 4


def _sample(i: int, shape: tuple[int, ...] = (1, 2, 3)) -> dict:
    return {
        "image": torch.full(shape, i, dtype=torch.int16),
        "label": np.full(shape, i, dtype=np.uint8),
        "weight": float(i),
        "meta": {
            "site": "a",
            "index": i,
            "affine": np.eye(4) * (i + 1),
            "spacing": (1.0, 2.0, 3.0),
            "region": ((0, 0, 0), shape[1:]),
        },
    }


def test_collate_stacks_tensors_and_lists_metadata() -> None:
    batch = collate_samples([_sample(0), _sample(1), _sample(2)])
    assert batch["image"].shape == (3, 1, 2, 3) and batch["image"].dtype == torch.int16
    assert batch["label"].dtype == torch.uint8 and batch["label"][2].max() == 2
    assert batch["weight"].tolist() == [0.0, 1.0, 2.0]
    meta = batch["meta"]
    assert meta["index"].tolist() == [0, 1, 2] and meta["site"] == ["a", "a", "a"]
    assert meta["affine"].shape == (3, 4, 4) and meta["affine"].dtype == torch.float64
    assert meta["affine"][1, 0, 0] == 2.0 and meta["spacing"].shape == (3, 3)
    assert to_device(batch, "cpu") is batch


def test_collate_names_what_does_not_match() -> None:
    with pytest.raises(InvalidInput, match=r"different 'image' shapes.*ResizeWithPadOrCropd"):
        collate_samples([_sample(0), _sample(1, (1, 4, 3))])
    other = _sample(1)
    del other["label"]
    with pytest.raises(InvalidInput, match="different keys"):
        collate_samples([_sample(0), other])
    with pytest.raises(InvalidInput, match="empty batch"):
        collate_samples([])
