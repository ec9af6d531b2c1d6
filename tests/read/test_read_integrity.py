"""Damaged and missing data: a corrupt chunk is named, never read as zeros (both engines)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.read.read_study import IMAGE, Written, write_study

from atlas.errors import CorruptData
from atlas.ome import Layout, open_image, write_image
from atlas.read import Engine, ImageRef, Reader, ReadRequest, Region
from atlas.storage import open_store

ENGINES = [Engine.TENSORSTORE, Engine.ZARR]


def _damage_chunk(shard_file, chunk: tuple[int, int, int], per_shard=(2, 2, 2)) -> None:
    """Flip a byte inside one inner chunk of a shard (the index at the end is left intact)."""
    raw = bytearray(shard_file.read_bytes())
    n = int(np.prod(per_shard))
    index = np.frombuffer(bytes(raw[-(16 * n + 4) : -4]), dtype="<u8").reshape(*per_shard, 2)
    offset, nbytes = (int(v) for v in index[chunk])
    raw[offset + nbytes // 2] ^= 0xFF
    shard_file.write_bytes(bytes(raw))


@pytest.fixture
def damaged(tmp_path) -> Written:
    """The test image with inner chunk (0, 0, 1) of level 0 and of the label damaged."""
    study = write_study(open_store(tmp_path / "store", site="s"))
    root = tmp_path / "store" / IMAGE
    _damage_chunk(root / "0" / "c" / "0" / "0" / "0", (0, 0, 1))
    _damage_chunk(root / "labels" / "organs" / "0" / "c" / "0" / "0" / "0", (0, 0, 0))
    return study


@pytest.mark.parametrize("engine", ENGINES)
def test_a_corrupt_chunk_names_image_level_chunk_and_object(damaged: Written, engine) -> None:
    reader = Reader({"s": damaged.store}, engine=engine)
    ref = ImageRef("s", IMAGE)
    expected = (
        r"corrupted data in 'study/subject-1/series-1\.ome\.zarr' level 0: chunk \(0, 0, 1\) "
        r"\(inner chunk of shard object 'study/subject-1/series-1\.ome\.zarr/0/c/0/0/0'\)"
    )
    with pytest.raises(CorruptData, match=expected) as caught:
        reader.read(ReadRequest(ref))
    assert caught.value.site == "s"
    with pytest.raises(CorruptData, match=expected):
        reader.read_many([ReadRequest(ref, Region((0, 0, 0), (4, 4, 4))),
                          ReadRequest(ref, Region((2, 2, 18), (6, 6, 22)))])  # fmt: skip
    # the other chunks of the same shard still read, and right
    ok = reader.read(ReadRequest(ref, Region((0, 0, 0), (8, 16, 16))))
    np.testing.assert_array_equal(ok.data, damaged.data[:8, :16, :16])
    # a label's damaged chunk is named in the label image
    with pytest.raises(CorruptData, match=r"labels/organs' level 0: chunk \(0, 0, 0\)"):
        reader.read(ReadRequest(ImageRef("s", IMAGE, "organs"), Region((0, 0, 0), (3, 3, 3))))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_truncated_shard_raises_instead_of_reading_zeros(tmp_path, engine) -> None:
    study = write_study(open_store(tmp_path / "store", site="s"))
    shard = tmp_path / "store" / IMAGE / "0" / "c" / "1" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    reader = Reader({"s": study.store}, engine=engine)
    with pytest.raises(CorruptData, match=r"level 0.*(chunk|could not read)"):
        reader.read(ReadRequest(ImageRef("s", IMAGE), Region((16, 0, 0), (20, 8, 8))))


def test_a_missing_shard_reads_as_the_fill_value_in_both_engines(tmp_path) -> None:
    """Zarr's rule (decision 0044): an absent chunk holds the array's fill value.

    The writer leaves out shards whose every voxel is the fill value, so an absent shard is
    the normal case for empty parts of label images and cannot be told from a lost one by
    the reader; both engines agree on it.
    """
    store = open_store(tmp_path / "store", site="s")
    data = np.zeros((32, 32, 32), dtype="int16")
    data[:16] = np.arange(16 * 32 * 32, dtype="int16").reshape(16, 32, 32) + 1
    write_image(store, "e.ome.zarr", data, spacing=(1, 1, 1),
                layout=Layout(chunks=(8, 16, 16), shards=(16, 32, 32)), max_levels=1)  # fmt: skip
    assert not store.exists("e.ome.zarr/0/c/1/0/0")  # the all-zero shard was never written
    assert store.exists("e.ome.zarr/0/c/0/0/0")
    ref = ImageRef("s", "e.ome.zarr")
    for engine in ENGINES:
        patch = Reader({"s": store}, engine=engine).read(ReadRequest(ref))
        np.testing.assert_array_equal(patch.data, data)
        assert not patch.padded
    np.testing.assert_array_equal(open_image(store, "e.ome.zarr").read(0), data)
