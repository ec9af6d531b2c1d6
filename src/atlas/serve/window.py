"""Display windows: CT presets, explicit width/centre, MR auto-window, and the uint8 mapping.

A window maps stored values (Hounsfield units for CT) to grey levels: ``centre - width / 2``
is black, ``centre + width / 2`` white, linear in between (the same start/end as the OME
``omero`` block Atlas writes). The presets are the usual CT ones; ``auto`` derives a window
from the image's own statistics (the 0.5th and 99.5th percentiles of a bounded sample of its
coarsest level), which is what MR needs: its values have no absolute scale.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from atlas.errors import InvalidInput

__all__ = [
    "AUTO_PERCENTILES",
    "MAX_WINDOW",
    "Preset",
    "Window",
    "WindowStats",
    "default_window",
    "parse_window",
]

#: explicit widths and centres beyond this magnitude are refused (no image dtype needs more)
MAX_WINDOW = 1e9
#: the percentiles ``auto`` maps to black and white
AUTO_PERCENTILES = (0.5, 99.5)
#: axial slices of the coarsest level sampled by ``auto`` (bounds its read for any length)
AUTO_SAMPLE_SLICES = 16


@dataclass(frozen=True)
class Window:
    """A linear window of ``width`` (> 0) around ``center``, in stored units."""

    width: float
    center: float

    def __post_init__(self) -> None:
        for name in ("width", "center"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidInput(f"window {name} must be a finite number, got {v!r}")
            if abs(v) > MAX_WINDOW:
                raise InvalidInput(f"window {name} must be within ±{MAX_WINDOW:g}, got {v!r}")
        if self.width <= 0:
            raise InvalidInput(f"window width must be > 0, got {self.width!r}")
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "center", float(self.center))

    @property
    def low(self) -> float:
        """The value shown black."""
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        """The value shown white."""
        return self.center + self.width / 2

    def key(self) -> str:
        """Canonical text ``"W,C"`` (shortest exact float repr), for ETags and cache keys."""
        return f"{self.width!r},{self.center!r}"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` mapped to uint8 grey levels (0 at :attr:`low`, 255 at :attr:`high`)."""
        scale = np.float32(255.0 / self.width)
        out = (values.astype(np.float32, copy=False) - np.float32(self.low)) * scale
        np.clip(out, 0, 255, out=out)
        result: np.ndarray = np.rint(out).astype(np.uint8)
        return result


class Preset(StrEnum):
    """The named windows a tile request may ask for (``auto``: from the image's statistics)."""

    CT_SOFT_TISSUE = "ct-soft-tissue"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"
    AUTO = "auto"

    @property
    def window(self) -> Window | None:
        """The fixed window of a CT preset; ``None`` for :attr:`AUTO`."""
        return _PRESETS.get(self)


_PRESETS = {
    Preset.CT_SOFT_TISSUE: Window(400, 40),
    Preset.LUNG: Window(1500, -600),
    Preset.BONE: Window(1800, 400),
    Preset.BRAIN: Window(80, 40),
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EXPLICIT = re.compile(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*")


def parse_window(value: Any) -> Preset | Window:
    """A window from a request: a preset name, ``"W,C"`` (width, centre), or the object itself.

    Raises
    ------
    InvalidInput
        Neither a preset nor two numbers; a width <= 0; a value not finite or beyond
        ±:data:`MAX_WINDOW`.
    """
    if isinstance(value, Preset | Window):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"window must be a preset name or 'width,center', got {value!r:.80}")
    try:
        return Preset(value.strip().lower())
    except ValueError:
        pass
    m = _EXPLICIT.fullmatch(value)
    if m is None:
        names = ", ".join(p.value for p in Preset)
        raise InvalidInput(f"window must be one of {names} or 'width,center', got {value!r}")
    return Window(float(m.group(1)), float(m.group(2)))


def default_window(modality: str | None) -> Preset:
    """The window a viewer opens an image with: CT soft tissue for CT, ``auto`` otherwise."""
    return Preset.CT_SOFT_TISSUE if (modality or "").upper() == "CT" else Preset.AUTO


def window_from_sample(sample: np.ndarray) -> Window:
    """The ``auto`` window of a sample of values (percentiles :data:`AUTO_PERCENTILES`)."""
    values = np.asarray(sample, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Window(1.0, 0.0)
    lo, hi = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    width = max(hi - lo, 1e-6 * max(1.0, abs(hi)), 1e-12)
    return Window(min(width, MAX_WINDOW), max(-MAX_WINDOW, min((lo + hi) / 2, MAX_WINDOW)))


class WindowStats:
    """A bounded, thread-safe cache of ``auto`` windows, one per image version.

    Parameters
    ----------
    max_items
        Images remembered (least recently used forgotten first).
    """

    def __init__(self, max_items: int = 4096) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise InvalidInput(f"max_items must be an integer >= 1, got {max_items!r}")
        self.max_items = max_items
        self._lock = threading.Lock()
        self._items: OrderedDict[Any, Window] = OrderedDict()

    def get(self, key: Any) -> Window | None:
        """The cached window of ``key``, or ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Any, window: Window) -> None:
        """Remember ``window`` for ``key``."""
        with self._lock:
            self._items[key] = window
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
