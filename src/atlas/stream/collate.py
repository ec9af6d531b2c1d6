"""Batches of streamed samples: :func:`collate_samples` and :func:`to_device`.

A sample is a dict (``image``, ``label``, ``meta``); a batch is the same dict with tensors
stacked along a new first axis and ``meta`` turned into a dict of per-sample lists (affines and
spacings stacked as float64 tensors). Anything a transform added is collated the same way
(tensors and numbers stacked, the rest listed), so MONAI and TorchIO outputs batch unchanged.

The CUDA path is :func:`to_device` alone: pinned tensors go to the GPU with
``non_blocking=True``; on a machine without CUDA nothing here touches a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atlas.errors import InvalidInput

__all__ = ["collate_samples", "to_device"]

#: meta fields stacked into tensors (the rest stay lists)
_STACKED_META = ("affine", "spacing")


def _stack(key: str, values: Sequence[Any]) -> Any:
    import numpy as np
    import torch

    first = values[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise InvalidInput(
                f"samples of a batch have different {key!r} shapes {sorted(shapes)}; crop or "
                "pad them to one size in the transform (e.g. MONAI ResizeWithPadOrCropd), or "
                "use batch size 1"
            )
        return torch.stack(list(values))
    if isinstance(first, np.ndarray):
        return _stack(key, [torch.from_numpy(np.ascontiguousarray(v)) for v in values])
    if isinstance(first, int | float):
        return torch.tensor(values)
    if isinstance(first, Mapping):
        return {k: _stack(k, [v[k] for v in values]) for k in first}
    return list(values)


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack a list of sample dicts into one batch dict.

    Raises
    ------
    InvalidInput
        The samples' tensors differ in shape (the message says how to make them match), or
        the samples do not all have the same keys.
    """
    if not samples:
        raise InvalidInput("cannot collate an empty batch")
    keys = list(samples[0])
    for s in samples[1:]:
        if list(s) != keys:
            raise InvalidInput(f"samples of a batch have different keys: {keys} and {list(s)}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key == "meta":
            batch[key] = _collate_meta(values)
        else:
            batch[key] = _stack(key, values)
    return batch


def _collate_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key in metas[0]:
        values = [m[key] for m in metas]
        if key in _STACKED_META:
            out[key] = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values])
        elif key == "index":
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


def to_device(batch: Any, device: Any) -> Any:
    """``batch`` with every tensor on ``device`` (non-blocking copies from pinned memory).

    On CPU (or for a CPU ``device``) tensors are returned as they are.
    """
    import torch

    target = torch.device(device)
    if target.type == "cpu":
        return batch
    return _cuda_copy(batch, target)


def _cuda_copy(value: Any, device: Any) -> Any:
    """The CUDA branch: pinned host tensors copy asynchronously (``non_blocking``)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=value.is_pinned())
    if isinstance(value, Mapping):
        return {k: _cuda_copy(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cuda_copy(v, device) for v in value)
    return value
