"""Reproducible per-sample transforms.

A seed from ``(seed, epoch, index)`` alone, and the transform run with its randomness drawn
from it (MONAI's own generator, or torch's and numpy's seeded for the call), so a sample is
the same whichever worker or rank builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["apply_transform", "sample_seed"]

Sample = dict[str, Any]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's transforms, from ``(seed, epoch, index)`` alone."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def apply_transform(transform: Callable[[Sample], Any], sample: Sample, seed: int) -> Any:
    """Apply ``transform`` with its randomness drawn from ``seed``.

    MONAI transforms (``set_random_state``) get their own generator; anything else (TorchIO,
    plain functions) runs with torch's and numpy's generators seeded for the call and
    restored after it.
    """
    set_state = getattr(transform, "set_random_state", None)
    if callable(set_state):
        set_state(seed=seed)
        return transform(sample)
    saved = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            return transform(sample)
        finally:
            np.random.set_state(saved)
