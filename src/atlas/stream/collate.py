"""Batches of streamed samples: :func:`collate_samples` and :func:`to_device`.

A sample is a dict (``image``, ``label``, ``meta``); a batch is the same dict with tensors
stacked along a new first axis and ``meta`` turned into a dict of per-sample lists (affines and
spacings stacked as float64 tensors). Anything a transform added is collated the same way
(tensors and numbers stacked, the rest listed), so MONAI and TorchIO outputs batch unchanged.

Each batch tensor is allocated once and the samples are copied into it with numpy (one
``memcpy`` each, on the calling thread): in a DataLoader worker the buffer is in shared memory,
so handing it to the training process copies nothing more; in the training process it is
pinned when asked (CUDA), so the DataLoader's pinning copies nothing more either.
``torch.stack`` would do the same copy through torch's intra-op thread pool, which on a small,
busy machine costs 5-40x more than the copy itself (decision 0055).

The CUDA path is :func:`to_device` alone: pinned tensors go to the GPU with
``non_blocking=True``; on a machine without CUDA nothing here touches a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atlas.errors import InvalidInput

__all__ = ["batch_buffer", "collate_samples", "to_device"]

#: meta fields stacked into tensors (the rest stay lists)
_STACKED_META = ("affine", "spacing")


def batch_buffer(shape: tuple[int, ...], dtype: Any, pin: bool = False) -> Any:
    """An uninitialised CPU tensor for one batch.

    In a DataLoader worker it is in shared memory (sent to the training process without a
    copy); else pinned if ``pin`` and CUDA is there to pin for; else ordinary memory.
    """
    import torch
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:  # sent to the training process: share, do not copy
        return torch.empty(shape, dtype=dtype).share_memory_()
    if pin and torch.cuda.is_available():
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.empty(shape, dtype=dtype)


def _stack(key: str, values: Sequence[Any], pin: bool = False) -> Any:
    import numpy as np
    import torch

    first = values[0]
    if isinstance(first, torch.Tensor | np.ndarray):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise InvalidInput(
                f"samples of a batch have different {key!r} shapes {sorted(shapes)}; crop or "
                "pad them to one size in the transform (e.g. MONAI ResizeWithPadOrCropd), or "
                "use batch size 1"
            )
        return _copy_stack(values, pin)
    if isinstance(first, int | float):
        return torch.tensor(values)
    if isinstance(first, Mapping):
        return {k: _stack(k, [v[k] for v in values], pin) for k in first}
    return list(values)


def _copy_stack(values: Sequence[Any], pin: bool) -> Any:
    """Tensors or arrays of one shape stacked into one new buffer (see the module docstring)."""
    import numpy as np
    import torch

    first = values[0]
    values = [
        torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for v in values
    ]
    first = values[0]
    plain = all(
        type(v) is torch.Tensor and v.device.type == "cpu" and v.dtype == first.dtype
        for v in values
    )
    if not plain or first.dtype.is_complex or first.dtype == torch.bfloat16:
        # a subclass (MONAI's MetaTensor batches its metadata too), another device, or a
        # dtype numpy has not: torch's own way
        return torch.stack(list(values))
    out = batch_buffer((len(values), *first.shape), first.dtype, pin)
    target = out.numpy()
    for i, v in enumerate(values):
        target[i] = v.detach().numpy()
    return out


def collate_samples(samples: Sequence[Mapping[str, Any]], pin: bool = False) -> dict[str, Any]:
    """Stack a list of sample dicts into one batch dict.

    ``pin``: allocate the batch's tensors in page-locked memory in the training process
    (with CUDA only; workers always use shared memory).

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
            batch[key] = _stack(key, values, pin)
    return batch


def _collate_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    for key in metas[0]:
        values = [m[key] for m in metas]
        if key in _STACKED_META:
            out[key] = torch.from_numpy(np.asarray(values, dtype=np.float64))
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
