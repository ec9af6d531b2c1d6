"""The tile route's renderer and cache: :mod:`atlas.serve.render` and :mod:`atlas.serve.tile_cache`.

Kept apart from the route so a test (or a deployment) can pass its own ``renderer`` and
``tile_cache`` to :func:`atlas.serve.app.create_app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["default_cache", "default_renderer"]


def default_renderer() -> Callable[..., Any]:
    """``render(reader, entry, params)`` with :func:`atlas.serve.render.render_tile`."""

    def render(reader: Any, entry: Any, params: Any) -> Any:
        from atlas.serve.render import TileSpec, render_tile

        spec = TileSpec(
            plane=params.plane.value,
            level=params.level,
            index=params.index,
            ty=params.ty,
            tx=params.tx,
            fmt=params.fmt.value,
            window=params.window,
            labels=params.labels,
            opacity=params.opacity,
        )
        return render_tile(reader, entry, spec)

    return render


def default_cache(nbytes: int) -> Any:
    """A :class:`atlas.serve.tile_cache.TileCache` of ``nbytes``."""
    try:
        from atlas.serve.tile_cache import TileCache
    except ImportError:  # rendering is not in this build yet
        return _NoCache()
    return TileCache(nbytes)


class _NoCache:
    def get(self, key: str) -> None:
        return None

    def put(self, key: str, value: bytes) -> None:
        return None
