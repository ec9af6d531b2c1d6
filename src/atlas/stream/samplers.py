"""Samplers: what each sample of an epoch reads, as a pure function of (seed, epoch, index).

A sampler turns a :class:`~atlas.stream.table.VolumeTable` into a :class:`SamplePlan`: how many
samples each volume gives (in storage order — sample ``c`` of the plan is its *canonical* id),
and, for any canonical ids, their boxes. Every random choice is drawn by
:mod:`atlas.stream.counter` from ``(seed, epoch, canonical id)``, so any process computes any
sample without shared random state. No pixel is read: balanced sampling takes its positive
centres from the annotation index's boxes.

- :class:`SliceSampler`: whole 2-D slices (axial, coronal, sagittal), every slice or
  ``per_volume`` random ones;
- :class:`PatchSampler`: uniform random 3-D patches;
- :class:`BalancedSampler`: patches centred inside a label's box with probability ``positive``,
  uniform otherwise;
- :class:`GridSampler`: a regular grid of patches covering each volume (sliding-window
  inference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from atlas.errors import InvalidInput
from atlas.stream import counter
from atlas.stream.spec import SamplePlan, SampleSpec, _count, _level, _size3, level_shapes
from atlas.stream.table import VolumeTable

__all__ = [
    "AXES",
    "BalancedSampler",
    "GridSampler",
    "PatchSampler",
    "SamplePlan",
    "SampleSpec",
    "Sampler",
    "SliceSampler",
    "sampler_from_params",
]

AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


@runtime_checkable
class Sampler(Protocol):
    """What every sampler provides (see :class:`PatchSampler` for an example)."""

    name: ClassVar[str]
    level: int

    def params(self) -> dict[str, Any]:
        """JSON-able parameters; :func:`sampler_from_params` rebuilds the sampler from them."""
        ...

    def plan(self, table: VolumeTable, seed: int, epoch: int) -> SamplePlan:
        """The epoch's samples; raises InvalidInput when the table cannot be sampled."""
        ...

    def _starts(
        self, plan: SamplePlan, c: np.ndarray, v: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def _sizes(self, plan: SamplePlan, v: np.ndarray) -> np.ndarray: ...


class _Base:
    """Shared machinery: per-volume counts → offsets, label image names, size checks."""

    name: ClassVar[str] = ""
    level: int = 0
    pad: bool = True
    labels_wanted: bool = False

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key, value in self.__dict__.items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def samples(self, table: VolumeTable, seed: int = 0, epoch: int = 0) -> list[SampleSpec]:
        """Every sample of the epoch in canonical order (small tables: tests, inspection)."""
        plan = self.plan(table, seed, epoch)  # type: ignore[attr-defined]
        return plan.specs(np.arange(len(plan)))

    def _new_plan(
        self,
        table: VolumeTable,
        seed: int,
        epoch: int,
        per_volume: np.ndarray,
        **context: Any,
    ) -> SamplePlan:
        for name, value in (("seed", seed), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InvalidInput(f"{name} must be an integer >= 0, got {value!r}")
        offsets = np.zeros(len(table) + 1, dtype=np.int64)
        np.cumsum(per_volume, out=offsets[1:])
        shapes, factors = level_shapes(table, self.level)
        first = table.first_label_image() if self.labels_wanted else [None] * len(table)
        images = sorted({x for x in first if x is not None} | set(context.pop("extra_images", ())))
        code = {name: i for i, name in enumerate(images)}
        context.update(
            shapes=shapes,
            factors=factors,
            label_images=images,
            first_image=np.array([code[x] if x else -1 for x in first], dtype=np.int64),
        )
        return SamplePlan(self, table, int(seed), int(epoch), offsets, {}, context)

    def _check_fits(self, shapes: np.ndarray, size: np.ndarray, table: VolumeTable) -> None:
        if self.pad:
            return
        small = np.nonzero((shapes < size).any(axis=1))[0]
        if small.size:
            v = table.volume(int(small[0]))
            raise InvalidInput(
                f"patch size {tuple(int(s) for s in size)} is larger than {small.size} "
                f"volume(s) at level {self.level}, e.g. {v.series_id}/{v.volume} of shape "
                f"{tuple(int(s) for s in shapes[small[0]])}; use pad=True or a smaller size"
            )

    @staticmethod
    def _uniform_starts(
        shapes: np.ndarray, size: np.ndarray, seed: int, epoch: int, c: np.ndarray
    ) -> np.ndarray:
        """Uniform start inside the volume where the patch fits; centred where it does not."""
        stream = counter.STREAMS["position"]
        free = shapes - size  # >= 0: room to move; < 0: the patch overhangs (padding)
        axes = np.arange(3)
        u = counter.uniform(seed, epoch, stream, c[:, None], axes[None, :])
        inside = np.floor(u * (free + 1)).astype(np.int64)
        return np.where(free >= 0, np.minimum(inside, np.maximum(free, 0)), free // 2)


@dataclass(frozen=True)
class PatchSampler(_Base):
    """Uniform random 3-D patches: ``per_volume`` from every volume, every epoch anew.

    Parameters
    ----------
    size : int or (int, int, int)
        Patch size in voxels at ``level`` (z, y, x).
    per_volume : int
        Patches drawn from each volume per epoch.
    level : int
        Pyramid level to read.
    pad : bool
        Allow patches larger than a volume (padded by the reader); ``False`` refuses them.
    labels : bool
        Read each volume's first label image alongside.
    """

    name: ClassVar[str] = "patch"
    size: tuple[int, int, int] = (64, 64, 64)
    per_volume: int = 1
    level: int = 0
    pad: bool = True
    labels: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size3(self.size))
        object.__setattr__(self, "per_volume", _count(self.per_volume, "per_volume"))
        object.__setattr__(self, "level", _level(self.level))

    @property
    def labels_wanted(self) -> bool:  # type: ignore[override]
        """Whether samples read each volume's first label image."""
        return bool(self.labels)

    def plan(self, table: VolumeTable, seed: int, epoch: int) -> SamplePlan:
        """See :class:`Sampler`."""
        per = np.full(len(table), self.per_volume, dtype=np.int64)
        plan = self._new_plan(table, seed, epoch, per)
        self._check_fits(plan.context["shapes"], np.asarray(self.size), table)
        plan.counts = {"volumes": len(table), "samples": len(plan)}
        return plan

    def _sizes(self, plan: SamplePlan, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.size, dtype=np.int64)

    def _starts(
        self, plan: SamplePlan, c: np.ndarray, v: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        shapes = plan.context["shapes"][v]
        size = np.asarray(self.size, dtype=np.int64)[None, :]
        start = self._uniform_starts(shapes, size, plan.seed, plan.epoch, c)
        return start, plan.context["first_image"][v]


@dataclass(frozen=True)
class SliceSampler(_Base):
    """Whole 2-D slices along one axis: every slice, or ``per_volume`` random ones per epoch.

    Parameters
    ----------
    axis : {"axial", "coronal", "sagittal"}
        Slices of constant z, y or x.
    size : (int, int), optional
        Crop each slice to this in-plane size (random position; padded where the plane is
        smaller). ``None``: the whole plane.
    per_volume : int, optional
        Random slices per volume and epoch; ``None``: every slice once.
    level, labels :
        As for :class:`PatchSampler`.
    """

    name: ClassVar[str] = "slice"
    axis: str = "axial"
    size: tuple[int, int] | None = None
    per_volume: int | None = None
    level: int = 0
    labels: bool = False

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise InvalidInput(f"unknown slice axis {self.axis!r}; choose one of {list(AXES)}")
        if self.size is not None:
            try:
                two = tuple(self.size)
            except TypeError:
                raise InvalidInput(f"slice size must be two ints, got {self.size!r}") from None
            if len(two) != 2:
                raise InvalidInput(f"slice size must be two ints, got {self.size!r}")
            three = _size3((1, *two), "slice size")
            object.__setattr__(self, "size", three[1:])
        if self.per_volume is not None:
            object.__setattr__(self, "per_volume", _count(self.per_volume, "per_volume"))
        object.__setattr__(self, "level", _level(self.level))

    @property
    def labels_wanted(self) -> bool:  # type: ignore[override]
        """Whether samples read each volume's first label image."""
        return bool(self.labels)

    def plan(self, table: VolumeTable, seed: int, epoch: int) -> SamplePlan:
        """See :class:`Sampler`."""
        shapes, _ = level_shapes(table, self.level)
        ax = AXES[self.axis]
        per = (
            shapes[:, ax].copy()
            if self.per_volume is None
            else np.full(len(table), self.per_volume)
        )
        plan = self._new_plan(table, seed, epoch, per.astype(np.int64))
        plan.counts = {"volumes": len(table), "samples": len(plan)}
        return plan

    def _sizes(self, plan: SamplePlan, v: np.ndarray) -> np.ndarray:
        shapes = plan.context["shapes"][v].copy()
        ax = AXES[self.axis]
        if self.size is not None:
            other = [a for a in range(3) if a != ax]
            shapes[:, other[0]] = self.size[0]
            shapes[:, other[1]] = self.size[1]
        shapes[:, ax] = 1
        return shapes

    def _starts(
        self, plan: SamplePlan, c: np.ndarray, v: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        shapes = plan.context["shapes"][v]
        ax = AXES[self.axis]
        size = self._sizes(plan, v)
        start = self._uniform_starts(shapes, size, plan.seed, plan.epoch, c)
        if self.size is None:
            start[:, [a for a in range(3) if a != ax]] = 0
        if self.per_volume is None:
            start[:, ax] = k
        return start, plan.context["first_image"][v]


@dataclass(frozen=True)
class BalancedSampler(_Base):
    """Label-balanced patches: positives centred inside a label's box, the rest uniform.

    With probability ``positive`` a sample is *positive*: one of the volume's boxes of the
    wanted labels is chosen uniformly and the patch centre drawn uniformly inside that box
    (the box of a label over its slices, from the annotation index: no label volume is read).
    A volume with no box of the wanted labels gives uniform patches only, and is counted in
    ``plan.counts["volumes_without_label"]`` — a label that covers nothing is skipped, never
    fatal.

    Parameters
    ----------
    size, per_volume, level, pad :
        As for :class:`PatchSampler`.
    labels : sequence of str
        Label names to balance for (``label_name`` in the annotations table); every one must
        occur somewhere in the plan.
    positive : float
        Probability in ``[0, 1]`` that a sample is positive.
    """

    name: ClassVar[str] = "balanced"
    size: tuple[int, int, int] = (64, 64, 64)
    labels: tuple[str, ...] = ()
    positive: float = 0.5
    per_volume: int = 1
    level: int = 0
    pad: bool = True
    labels_wanted: ClassVar[bool] = True  # type: ignore[misc]

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size3(self.size))
        labels = (self.labels,) if isinstance(self.labels, str) else tuple(self.labels)
        if not labels or any(not isinstance(x, str) or not x for x in labels):
            raise InvalidInput(f"BalancedSampler needs label names, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(dict.fromkeys(labels)))
        p = self.positive
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
            raise InvalidInput(f"positive must be a probability in [0, 1], got {p!r}")
        object.__setattr__(self, "positive", float(p))
        object.__setattr__(self, "per_volume", _count(self.per_volume, "per_volume"))
        object.__setattr__(self, "level", _level(self.level))

    def plan(self, table: VolumeTable, seed: int, epoch: int) -> SamplePlan:
        """See :class:`Sampler`; InvalidInput names a wanted label that no volume has."""
        codes = [table.label_code(name) for name in self.labels]  # raises for absent labels
        wanted = np.isin(table.box_label, codes)
        eligible = np.nonzero(wanted)[0]  # sorted by volume (the table's box order)
        first = np.searchsorted(table.box_volume[eligible], np.arange(len(table) + 1))
        n_boxes = np.diff(first)
        import pyarrow as pa
        import pyarrow.compute as pc

        images = table.box_image.take(pa.array(eligible, pa.int64()))
        distinct = pc.unique(images).to_pylist() if eligible.size else []
        per = np.full(len(table), self.per_volume, dtype=np.int64)
        plan = self._new_plan(table, seed, epoch, per, extra_images=distinct)
        names = pa.array(plan.context["label_images"], pa.string())
        box_codes = pc.index_in(images, value_set=names).to_numpy(zero_copy_only=False)
        plan.context.update(
            eligible=eligible,
            box_first=first[:-1],
            box_count=n_boxes,
            box_image=np.asarray(box_codes, dtype=np.int64).reshape(-1),
        )
        self._check_fits(plan.context["shapes"], np.asarray(self.size), table)
        volumes_with = {
            name: int(np.unique(table.box_volume[table.box_label == c]).size)
            for name, c in zip(self.labels, codes, strict=True)
        }
        plan.counts = {
            "volumes": len(table),
            "samples": len(plan),
            "volumes_with_label": volumes_with,
            "volumes_without_label": {n: len(table) - k for n, k in volumes_with.items()},
            "volumes_without_any": int((n_boxes == 0).sum()),
            "empty_boxes": table.counts.empty_boxes,
        }
        return plan

    def _sizes(self, plan: SamplePlan, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.size, dtype=np.int64)

    def _starts(
        self, plan: SamplePlan, c: np.ndarray, v: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        ctx = plan.context
        shapes = ctx["shapes"][v]
        size = np.asarray(self.size, dtype=np.int64)[None, :]
        start = self._uniform_starts(shapes, size, plan.seed, plan.epoch, c)
        label = ctx["first_image"][v].copy()
        n_boxes = ctx["box_count"][v]
        u = counter.uniform(plan.seed, plan.epoch, counter.STREAMS["positive"], c)
        pos = np.nonzero((u < self.positive) & (n_boxes > 0))[0]
        if pos.size:
            pick = counter.integers(
                n_boxes[pos], plan.seed, plan.epoch, counter.STREAMS["choice"], c[pos]
            )
            box = ctx["eligible"][ctx["box_first"][v[pos]] + pick]
            factors = ctx["factors"][v[pos]]
            lo = plan.table.box_start[box] // factors
            hi = np.maximum(-(-plan.table.box_stop[box] // factors), lo + 1)
            w = counter.uniform(
                plan.seed, plan.epoch, counter.STREAMS["position"] + 1, c[pos][:, None],
                np.arange(3)[None, :],
            )  # fmt: skip
            centre = lo + np.floor(w * (hi - lo)).astype(np.int64)
            centre = np.minimum(centre, hi - 1)
            start[pos] = centre - size // 2
            if not self.pad:  # keep the patch inside the volume (it fits: checked in plan)
                start[pos] = np.clip(start[pos], 0, shapes[pos] - size)
            label[pos] = ctx["box_image"][ctx["box_first"][v[pos]] + pick]
        return start, label


@dataclass(frozen=True)
class GridSampler(_Base):
    """Patches on a regular grid covering every volume (sliding-window inference).

    Along each axis the patches start at ``0, stride, 2 * stride, ...`` with ``stride =
    size * (1 - overlap)`` (at least 1), the last one moved back to end at the volume's edge;
    an axis shorter than the patch gets one patch, padded. No randomness: every epoch is the
    same.
    """

    name: ClassVar[str] = "grid"
    size: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.0
    level: int = 0
    labels: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size3(self.size))
        o = self.overlap
        if isinstance(o, bool) or not isinstance(o, int | float) or not 0.0 <= float(o) < 1.0:
            raise InvalidInput(f"overlap must be a fraction in [0, 1), got {o!r}")
        object.__setattr__(self, "overlap", float(o))
        object.__setattr__(self, "level", _level(self.level))

    @property
    def labels_wanted(self) -> bool:  # type: ignore[override]
        """Whether samples read each volume's first label image."""
        return bool(self.labels)

    @property
    def stride(self) -> tuple[int, int, int]:
        """Voxels between neighbouring patch starts along each axis."""
        s = tuple(max(1, round(n * (1.0 - self.overlap))) for n in self.size)
        return (s[0], s[1], s[2])

    def tiles(self, shapes: np.ndarray) -> np.ndarray:
        """Patches per axis for volumes of ``shapes`` (n, 3)."""
        size = np.asarray(self.size)[None, :]
        stride = np.asarray(self.stride)[None, :]
        return np.where(shapes > size, -(-(shapes - size) // stride) + 1, 1).astype(np.int64)

    def plan(self, table: VolumeTable, seed: int, epoch: int) -> SamplePlan:
        """See :class:`Sampler`."""
        shapes, _ = level_shapes(table, self.level)
        tiles = self.tiles(shapes)
        plan = self._new_plan(table, seed, epoch, tiles.prod(axis=1))
        plan.context["tiles"] = tiles
        plan.counts = {"volumes": len(table), "samples": len(plan)}
        return plan

    def _sizes(self, plan: SamplePlan, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.size, dtype=np.int64)

    def _starts(
        self, plan: SamplePlan, c: np.ndarray, v: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        tiles = plan.context["tiles"][v]
        shapes = plan.context["shapes"][v]
        size = np.asarray(self.size, dtype=np.int64)[None, :]
        stride = np.asarray(self.stride, dtype=np.int64)[None, :]
        iz = k // (tiles[:, 1] * tiles[:, 2])
        iy = (k // tiles[:, 2]) % tiles[:, 1]
        ix = k % tiles[:, 2]
        idx = np.stack([iz, iy, ix], axis=1)
        start = np.minimum(idx * stride, np.maximum(shapes - size, 0))
        start = np.where(shapes >= size, start, (shapes - size) // 2)
        return start, plan.context["first_image"][v]


_SAMPLERS: dict[str, type[Any]] = {
    cls.name: cls for cls in (PatchSampler, SliceSampler, BalancedSampler, GridSampler)
}


def sampler_from_params(params: Mapping[str, Any]) -> Any:
    """Rebuild a sampler from its :meth:`params` (e.g. from a stream's state)."""
    if not isinstance(params, Mapping) or "name" not in params:
        raise InvalidInput(f"sampler parameters need a 'name', got {params!r}")
    kind = params["name"]
    cls = _SAMPLERS.get(kind)
    if cls is None:
        raise InvalidInput(f"unknown sampler {kind!r}; known: {sorted(_SAMPLERS)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k != "name"}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InvalidInput(f"bad parameters for the {kind!r} sampler: {exc}") from None
