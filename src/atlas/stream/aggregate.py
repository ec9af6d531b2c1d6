"""Stitch sliding-window predictions back into one volume (grid inference).

A grid sampler cuts a volume into overlapping patches (each a :class:`~atlas.read.Region`);
a model predicts on each; :class:`GridAggregator` adds every prediction into place and
returns the weighted mean at each voxel, with the volume's patient-space affine, so the
result can be written as an image or a label beside the input.

The weights are those of MONAI's ``sliding_window_inference``: ``mode="constant"`` averages
overlapping predictions equally; ``mode="gaussian"`` weights each patch by a Gaussian centred
on it (sigma = ``sigma_scale`` x patch size per axis, clamped below at the same floor as
MONAI's ``compute_importance_map``), so voxels near a patch's border count less. A test
checks the result against ``sliding_window_inference`` on the same input.

The aggregator takes regions, not a sampler: any source of boxes (a grid, a list of patches,
patches read at a pyramid level) stitches the same way. Regions may lie partly outside the
volume (padded patches); only the part inside is added. No torch import: predictions may be
numpy arrays or CPU/GPU tensors (copied to host memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from atlas.errors import InvalidInput

__all__ = ["BLEND_MODES", "GridAggregator", "StitchedVolume", "importance_map"]

#: the weighting modes :class:`GridAggregator` supports (MONAI's ``BlendMode`` names)
BLEND_MODES = ("constant", "gaussian")

#: smallest weight of a Gaussian importance map (MONAI's ``compute_importance_map`` floor)
_MIN_WEIGHT = 1e-3


class _Box(Protocol):
    """A voxel box with ``start`` and exclusive ``stop`` (e.g. :class:`atlas.read.Region`)."""

    @property
    def start(self) -> tuple[int, ...]: ...

    @property
    def stop(self) -> tuple[int, ...]: ...


def importance_map(
    size: Sequence[int], mode: str = "constant", sigma_scale: float | Sequence[float] = 0.125
) -> np.ndarray:
    """The weight of each voxel of a patch of ``size`` (float32), as MONAI computes it.

    Parameters
    ----------
    size
        Patch size along each spatial axis.
    mode
        ``"constant"`` (all ones) or ``"gaussian"`` (a separable Gaussian centred on the
        patch, sigma = ``sigma_scale * size`` per axis, clamped below at
        ``max(min(map), 1e-3)``).
    sigma_scale
        One factor for every axis, or one per axis (Gaussian mode only).

    Returns
    -------
    numpy.ndarray
        Float32 weights of shape ``size``.
    """
    size = tuple(int(n) for n in size)
    if mode not in BLEND_MODES:
        raise InvalidInput(f"blend mode must be one of {list(BLEND_MODES)}, got {mode!r}")
    if any(n <= 0 for n in size):
        raise InvalidInput(f"patch size must be positive on every axis, got {size}")
    if mode == "constant":
        return np.ones(size, dtype=np.float32)
    scales = _per_axis(sigma_scale, len(size), "sigma_scale")
    weights = np.ones((), dtype=np.float32)
    for n, scale in zip(size, scales, strict=True):
        x = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0)
        sigma = np.float32(n * scale)
        g = np.exp(x**2 / (np.float32(-2.0) * sigma**2)).astype(np.float32)
        weights = np.multiply.outer(weights, g)
    floor = max(float(weights.min()), _MIN_WEIGHT)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def _per_axis(value: float | Sequence[float], n: int, what: str) -> tuple[float, ...]:
    values = (value,) * n if isinstance(value, int | float) else tuple(value)
    if len(values) != n or not all(np.isfinite(v) and v > 0 for v in values):
        raise InvalidInput(f"{what} must be one positive number or {n}, got {value!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True, eq=False)
class StitchedVolume:
    """The stitched prediction of one volume.

    Attributes
    ----------
    data
        The weighted mean of the predictions: ``(C, *shape)`` when predictions had a channel
        axis, else ``shape``. Voxels no patch covered hold the aggregator's ``fill``.
    affine
        Voxel index -> patient mm of ``data``'s spatial axes (the volume's affine).
    covered
        Boolean mask of ``shape``: voxels at least one patch covered.
    """

    data: np.ndarray
    affine: np.ndarray
    covered: np.ndarray

    @property
    def complete(self) -> bool:
        """Whether every voxel was covered by some patch."""
        return bool(self.covered.all())


class GridAggregator:
    """Add patch predictions into a volume and return their weighted mean.

    Parameters
    ----------
    shape
        Spatial shape of the volume at the level the regions refer to (``z, y, x`` or
        ``y, x``).
    affine
        Voxel index -> patient mm of that volume (``(n + 1) x (n + 1)``, or ``4 x 4`` for a
        3-D volume); the result carries it. ``None``: the identity.
    mode
        ``"constant"`` or ``"gaussian"`` weighting (see :func:`importance_map`).
    sigma_scale
        Gaussian sigma as a fraction of the patch size (one number or one per axis).
    dtype
        Accumulator and result dtype (a float type; ``float32`` as MONAI, ``float64`` for
        exact sums of large overlaps).
    fill
        Value of voxels no patch covered.

    Examples
    --------
    >>> agg = GridAggregator(volume_shape, affine, mode="gaussian")   # doctest: +SKIP
    >>> for region, prediction in zip(regions, predictions):          # doctest: +SKIP
    ...     agg.add(region, prediction)                               # (C, *region.size)
    >>> out = agg.result()          # out.data: (C, *volume_shape), out.affine  # doctest: +SKIP
    """

    def __init__(
        self,
        shape: Sequence[int],
        affine: np.ndarray | None = None,
        *,
        mode: str = "constant",
        sigma_scale: float | Sequence[float] = 0.125,
        dtype: Any = np.float32,
        fill: float = 0.0,
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        if not self.shape or any(n <= 0 for n in self.shape):
            raise InvalidInput(f"volume shape must be positive on every axis, got {shape!r}")
        n = len(self.shape)
        self.affine = np.eye(n + 1) if affine is None else np.array(affine, dtype=np.float64)
        if self.affine.ndim != 2 or self.affine.shape[1] != n + 1 or self.affine.shape[0] < n:
            raise InvalidInput(
                f"affine of shape {self.affine.shape} does not fit a {n}-D volume "
                f"(expected {n + 1} columns)"
            )
        if mode not in BLEND_MODES:
            raise InvalidInput(f"blend mode must be one of {list(BLEND_MODES)}, got {mode!r}")
        self.mode = mode
        self.sigma_scale = _per_axis(sigma_scale, n, "sigma_scale")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise InvalidInput(f"aggregator dtype must be a float type, got {self.dtype}")
        self.fill = float(fill)
        self._weights: dict[tuple[int, ...], np.ndarray] = {}
        self._sum: np.ndarray | None = None  # (C, *shape)
        self._count = np.zeros(self.shape, dtype=self.dtype)
        self._channels: bool | None = None  # whether predictions carry a channel axis
        self.patches = 0

    @classmethod
    def for_image(cls, info: Any, level: int = 0, **options: Any) -> GridAggregator:
        """An aggregator for ``level`` of an image (an :class:`atlas.read.ImageInfo`).

        Its shape is the level's spatial shape and its affine the level's voxel -> patient
        affine, so the result lines up with the image; ``options`` as for the constructor.
        """
        n = int(info.n_spatial)
        return cls(info.level_shape(level)[-n:], info.level_affine(level), **options)

    def _weight(self, size: tuple[int, ...]) -> np.ndarray:
        w = self._weights.get(size)
        if w is None:
            w = importance_map(size, self.mode, self.sigma_scale).astype(self.dtype)
            self._weights[size] = w
        return w

    def add(self, region: _Box, prediction: Any) -> None:
        """Add one patch's prediction.

        Parameters
        ----------
        region
            The patch's voxel box (``start``/``stop``); extra leading (channel) axes of the
            region are ignored, only its last ``len(shape)`` axes place it.
        prediction
            Array of ``region``'s spatial size, optionally with a leading channel axis
            (``(C, *size)``); a numpy array or a tensor (detached and copied to the host).
        """
        n = len(self.shape)
        start = tuple(int(v) for v in region.start)[-n:]
        stop = tuple(int(v) for v in region.stop)[-n:]
        if len(start) != n or len(stop) != n:
            raise InvalidInput(f"region {region!r} has fewer than the volume's {n} axes")
        size = tuple(b - a for a, b in zip(start, stop, strict=True))
        pred = _host_array(prediction)
        channels = pred.ndim == n + 1
        if pred.ndim not in (n, n + 1) or tuple(pred.shape[-n:]) != size:
            raise InvalidInput(
                f"prediction of shape {tuple(pred.shape)} does not match region size {size} "
                f"(expected {size} or (C, *{size}))"
            )
        if self._channels is not None and (
            channels != self._channels
            or (channels and self._sum is not None and pred.shape[0] != self._sum.shape[0])
        ):
            have = self._sum.shape[0] if self._sum is not None and self._channels else None
            raise InvalidInput(
                f"prediction of shape {tuple(pred.shape)} has a different channel layout than "
                f"the earlier ones ({have if have is not None else 'no channel axis'})"
            )
        lo = tuple(max(0, a) for a in start)
        hi = tuple(min(d, b) for d, b in zip(self.shape, stop, strict=True))
        if any(b <= a for a, b in zip(lo, hi, strict=True)):
            raise InvalidInput(
                f"region {start}..{stop} lies wholly outside the volume of shape {self.shape}"
            )
        inside = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        local = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        if self._sum is None:
            self._channels = channels
            c = pred.shape[0] if channels else 1
            self._sum = np.zeros((c, *self.shape), dtype=self.dtype)
        w = self._weight(size)[local]
        values = pred[(slice(None), *local)] if channels else pred[local][None]
        self._sum[(slice(None), *inside)] += values.astype(self.dtype, copy=False) * w
        self._count[inside] += w
        self.patches += 1

    def add_batch(self, regions: Sequence[_Box], predictions: Any) -> None:
        """Add a batch: ``predictions[i]`` is the prediction of ``regions[i]``.

        ``predictions`` is a sequence of arrays or one array (tensor) of shape
        ``(B, C, *size)`` / ``(B, *size)``.
        """
        preds = _host_array(predictions) if not isinstance(predictions, list | tuple) else None
        count = len(preds) if preds is not None else len(predictions)
        if count != len(regions):
            raise InvalidInput(f"{len(regions)} regions but {count} predictions")
        for i, region in enumerate(regions):
            self.add(region, preds[i] if preds is not None else predictions[i])

    def result(self) -> StitchedVolume:
        """The weighted mean of everything added so far, with the volume's affine."""
        if self._sum is None:
            raise InvalidInput("no prediction was added; add patches before asking for the result")
        covered = self._count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            data = self._sum / self._count[None]
        data[:, ~covered] = self.fill
        out = data if self._channels else data[0]
        return StitchedVolume(out.astype(self.dtype, copy=False), self.affine.copy(), covered)


def _host_array(value: Any) -> np.ndarray:
    """``value`` as a numpy array; a torch tensor is detached and copied to the host first."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"predictions must be numeric arrays, got dtype {arr.dtype}")
    return arr
