"""Planning a multiscale pyramid: which axes halve at each level, and the resulting grid.

y and x halve at every level; z halves only when the volume is close enough to isotropic
(its spacing at most 1.5x the finer in-plane spacing), so thick-slice CT keeps its slices until
the in-plane resolution has caught up. Levels stop once the larger in-plane size is at most
``target`` pixels (256 by default) or nothing can shrink any further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from atlas.errors import InvalidInput

MAX_LEVELS = 10


@dataclass(frozen=True)
class PlannedLevel:
    """Spatial shape, spacing, cumulative factors and per-step factors of one level."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    factors: tuple[int, ...]
    step: tuple[int, ...]


def plan_levels(
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    *,
    target: int = 256,
    max_levels: int | None = None,
    z_isotropy: float = 1.5,
) -> list[PlannedLevel]:
    """Levels for a spatial ``shape`` (``(y, x)`` or ``(z, y, x)``) with voxel ``spacing``."""
    if len(shape) not in (2, 3) or len(spacing) != len(shape):
        raise InvalidInput(f"cannot plan a pyramid for shape {shape} with spacing {spacing}")
    if target < 1:
        raise InvalidInput(f"pyramid target size must be >= 1, got {target}")
    limit = MAX_LEVELS if max_levels is None else max(1, min(max_levels, MAX_LEVELS))
    levels = [PlannedLevel(shape, spacing, (1,) * len(shape), (1,) * len(shape))]
    while len(levels) < limit:
        cur = levels[-1]
        if max(cur.shape[-2:]) <= target:
            break
        step = []
        for axis, n in enumerate(cur.shape):
            if n <= 1:
                step.append(1)
            elif axis < len(cur.shape) - 2:  # z
                inplane = min(cur.spacing[-2:])
                step.append(2 if cur.spacing[axis] <= z_isotropy * inplane else 1)
            else:
                step.append(2)
        if all(s == 1 for s in step):
            break
        levels.append(
            PlannedLevel(
                shape=tuple(math.ceil(n / s) for n, s in zip(cur.shape, step, strict=True)),
                spacing=tuple(p * s for p, s in zip(cur.spacing, step, strict=True)),
                factors=tuple(f * s for f, s in zip(cur.factors, step, strict=True)),
                step=tuple(step),
            )
        )
    return levels
