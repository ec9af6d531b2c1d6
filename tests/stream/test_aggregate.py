"""GridAggregator: stitching sliding-window predictions, checked against MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atlas.errors import InvalidInput
from atlas.read import Region as Box
from atlas.stream.aggregate import GridAggregator, importance_map


def _grid(shape, size, overlap):
    """MONAI's sliding-window boxes (``dense_patch_slices`` with its scan interval)."""
    from monai.data.utils import dense_patch_slices

    interval = [
        n if n == d else max(1, int(n * (1 - overlap))) for n, d in zip(size, shape, strict=True)
    ]
    return [
        Box(tuple(s.start for s in sl), tuple(s.stop for s in sl))
        for sl in dense_patch_slices(shape, size, interval)
    ]


def _crop(volume, box, fill=0):
    """The patch of ``box`` from ``volume`` (padded with ``fill`` outside), as a grid reads it."""
    out = np.full(
        tuple(b - a for a, b in zip(box.start, box.stop, strict=True)), fill, dtype=volume.dtype
    )
    src = tuple(
        slice(max(0, a), min(n, b))
        for a, b, n in zip(box.start, box.stop, volume.shape, strict=True)
    )
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, box.start, strict=True))
    out[dst] = volume[src]
    return out


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(9)
    return rng.integers(-1000, 2000, size=(20, 33, 40), dtype=np.int16)


AFFINE = np.array(
    [[0.0, 0.0, 0.7, -120.0], [0.0, 0.7, 0.0, -90.0], [2.5, 0.0, 0.0, 30.0], [0, 0, 0, 1]]
)


def test_identity_prediction_reproduces_the_volume_exactly(volume) -> None:
    boxes = _grid(volume.shape, (8, 16, 16), overlap=0.5)
    assert len(boxes) > 8  # real overlaps on every axis
    agg = GridAggregator(volume.shape, AFFINE)
    for box in boxes:
        agg.add(box, _crop(volume, box))
    out = agg.result()
    assert agg.patches == len(boxes)
    assert out.complete and out.data.shape == volume.shape and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, volume)
    np.testing.assert_array_equal(out.affine, AFFINE)
    # multi-channel predictions (C, *size), added as one batch
    agg = GridAggregator(volume.shape, AFFINE, dtype="float64")
    agg.add_batch(boxes, [np.stack([_crop(volume, b), -2 * _crop(volume, b)]) for b in boxes])
    out = agg.result()
    assert out.data.shape == (2, *volume.shape)
    np.testing.assert_array_equal(out.data[0], volume)
    np.testing.assert_array_equal(out.data[1], -2 * volume.astype(np.float64))


def test_padded_boxes_outside_the_volume_add_only_their_inside(volume) -> None:
    # a grid that starts before the volume and runs past its end, as padded patches do
    boxes = [
        Box((z, y, x), (z + 12, y + 16, x + 16))
        for z in range(-4, 20, 8)
        for y in range(-6, 33, 12)
        for x in range(-8, 40, 12)
    ]
    agg = GridAggregator(volume.shape, mode="gaussian")
    for box in boxes:
        agg.add(box, _crop(volume, box, fill=-5000))
    out = agg.result()
    assert out.complete
    np.testing.assert_allclose(out.data, volume, rtol=1e-5, atol=1e-3)


def test_overlaps_are_averaged_with_the_right_weights() -> None:
    shape = (2, 3, 10)
    left, right = Box((0, 0, 0), (2, 3, 6)), Box((0, 0, 4), (2, 3, 10))
    agg = GridAggregator(shape)
    agg.add(left, np.full((2, 3, 6), 1.0))
    agg.add(right, np.full((2, 3, 6), 4.0))
    out = agg.result().data
    np.testing.assert_array_equal(out[..., :4], 1.0)
    np.testing.assert_array_equal(out[..., 4:6], 2.5)  # (1 + 4) / 2
    np.testing.assert_array_equal(out[..., 6:], 4.0)
    # Gaussian: each overlap voxel is sum(w_i * p_i) / sum(w_i) with each patch's own weight
    w = importance_map((2, 3, 6), "gaussian")
    agg = GridAggregator(shape, mode="gaussian", dtype="float64")
    agg.add(left, np.full((2, 3, 6), 1.0))
    agg.add(right, np.full((2, 3, 6), 4.0))
    out = agg.result().data
    wl, wr = w[..., 4:6], w[..., 0:2]
    np.testing.assert_allclose(out[..., 4:6], (wl * 1 + wr * 4) / (wl + wr), rtol=1e-6)
    np.testing.assert_array_equal(out[..., :4], 1.0)
    assert not np.allclose(out[..., 4:6], 2.5)  # the weights matter


def test_gaussian_weights_match_monai() -> None:
    from monai.data.utils import compute_importance_map

    for size in [(8, 16, 16), (5, 7, 9), (1, 12, 12), (64, 64)]:
        ours = importance_map(size, "gaussian", sigma_scale=0.125)
        theirs = compute_importance_map(size, mode="gaussian", sigma_scale=0.125).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
        assert ours.min() >= 1e-3 - 1e-9


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_matches_monai_sliding_window_inference(volume, mode) -> None:
    import torch
    from monai.inferers import sliding_window_inference

    size, overlap = (8, 16, 16), 0.25

    def predictor(x: torch.Tensor) -> torch.Tensor:
        # depends on the whole patch (its mean), so overlapping windows disagree
        centred = x - x.mean(dim=(2, 3, 4), keepdim=True)
        return torch.cat([centred, torch.tanh(x / 500.0)], dim=1)

    image = torch.from_numpy(volume.astype(np.float32))[None, None]
    theirs = sliding_window_inference(
        image, size, sw_batch_size=4, predictor=predictor, overlap=overlap, mode=mode
    )[0].numpy()
    agg = GridAggregator(volume.shape, AFFINE, mode=mode)
    boxes = _grid(volume.shape, size, overlap)
    for i in range(0, len(boxes), 4):  # batches, as a DataLoader would give them
        batch = boxes[i : i + 4]
        patches = torch.stack(
            [torch.from_numpy(_crop(volume, b).astype(np.float32)) for b in batch]
        )
        agg.add_batch(batch, predictor(patches[:, None]))
    out = agg.result()
    assert out.data.shape == theirs.shape == (2, *volume.shape)
    np.testing.assert_allclose(out.data, theirs, rtol=1e-5, atol=1e-3)
    # the check has teeth: a plain per-patch prediction differs from the stitched mean
    first = predictor(torch.from_numpy(_crop(volume, boxes[0]).astype(np.float32))[None, None])
    assert not math.isclose(float(first[0, 0, -1, -1, -1]), float(out.data[0, 7, 15, 15]))


def test_uncovered_voxels_hold_the_fill_and_are_reported() -> None:
    agg = GridAggregator((4, 4, 4), fill=-1.0)
    agg.add(Box((0, 0, 0), (2, 4, 4)), np.ones((2, 4, 4)))
    out = agg.result()
    assert not out.complete
    assert out.covered[:2].all() and not out.covered[2:].any()
    np.testing.assert_array_equal(out.data[2:], -1.0)
    np.testing.assert_array_equal(out.data[:2], 1.0)


def test_bad_input_is_refused_naming_the_value() -> None:
    agg = GridAggregator((4, 8, 8))
    with pytest.raises(InvalidInput, match=r"does not match region size \(2, 4, 4\)"):
        agg.add(Box((0, 0, 0), (2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(InvalidInput, match="wholly outside"):
        agg.add(Box((4, 0, 0), (6, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(InvalidInput, match="no prediction was added"):
        agg.result()
    agg.add(Box((0, 0, 0), (2, 4, 4)), np.zeros((3, 2, 4, 4)))
    with pytest.raises(InvalidInput, match="different channel layout"):
        agg.add(Box((0, 0, 0), (2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(InvalidInput, match="different channel layout"):
        agg.add(Box((0, 0, 0), (2, 4, 4)), np.zeros((2, 2, 4, 4)))
    with pytest.raises(InvalidInput, match="2 regions but 1 predictions"):
        agg.add_batch([Box((0, 0, 0), (2, 4, 4))] * 2, np.zeros((1, 3, 2, 4, 4)))
    with pytest.raises(InvalidInput, match="blend mode"):
        GridAggregator((4, 4, 4), mode="median")
    with pytest.raises(InvalidInput, match="positive"):
        GridAggregator((4, 0, 4))
    with pytest.raises(InvalidInput, match="float type"):
        GridAggregator((4, 4, 4), dtype="int16")
    with pytest.raises(InvalidInput, match="4 columns"):
        GridAggregator((4, 4, 4), np.eye(3))
    with pytest.raises(InvalidInput, match="sigma_scale"):
        GridAggregator((4, 4, 4), mode="gaussian", sigma_scale=(0.1, 0.1))


def test_for_image_takes_the_level_shape_and_affine(tmp_path) -> None:
    from atlas.ome import write_image
    from atlas.read import ImageRef, Reader, ReadRequest
    from atlas.storage import open_store

    store = open_store(tmp_path / "site", site="local")
    data = np.arange(8 * 64 * 48, dtype=np.int16).reshape(8, 64, 48)
    write_image(store, "v.ome.zarr", data, spacing=(2.0, 0.5, 0.5), origin=(10, 20, 30),
                pyramid_target=32)  # fmt: skip
    reader = Reader({"local": store}, engine="zarr")
    info = reader.info(ImageRef("local", "v.ome.zarr"))
    agg = GridAggregator.for_image(info, level=1)
    assert agg.shape == info.level_shape(1) == (8, 32, 24)
    boxes = _grid(agg.shape, (4, 16, 16), overlap=0.5)
    patches = reader.read_many([ReadRequest(info.ref, b, level=1) for b in boxes])
    for patch in patches:  # each patch's own affine places it in the stitched volume
        agg.add(patch.request.region, patch.data)
        start = np.append(np.asarray(patch.request.region.start, dtype=float), 1.0)
        np.testing.assert_allclose(agg.affine @ start, patch.affine[:, 3])
    out = agg.result()
    np.testing.assert_array_equal(out.affine, info.level_affine(1))
    np.testing.assert_array_equal(out.data, reader.read(ReadRequest(info.ref, level=1)).data)
