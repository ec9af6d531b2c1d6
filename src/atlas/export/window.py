"""Display windows for PNG export: the four CT presets, ``W,C``, and ``auto``.

This duplicates the preset table of :mod:`atlas.serve.window` on purpose: export and serve are
sibling layers and may not import each other (docs/decisions/0065). ``centre - width / 2`` is
black, ``centre + width / 2`` white, linear in between; ``auto`` takes the 0.5th and 99.5th
percentiles of the exported volume (what MR needs: its values have no absolute scale).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from atlas.errors import InvalidInput

__all__ = ["ExportWindow", "WindowPreset", "auto_window", "parse_export_window"]

#: explicit widths and centres beyond this magnitude are refused
MAX_WINDOW = 1e9
#: the percentiles ``auto`` maps to black and white
AUTO_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class ExportWindow:
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

    def apply(self, values: np.ndarray) -> np.ndarray:
        """``values`` mapped to uint8 grey levels (0 at ``low``, 255 at ``low + width``)."""
        out = (values.astype(np.float32) - np.float32(self.low)) * np.float32(255.0 / self.width)
        np.clip(out, 0, 255, out=out)
        result: np.ndarray = np.rint(out).astype(np.uint8)
        return result


class WindowPreset(StrEnum):
    """Named windows (``auto``: from the exported volume's own percentiles)."""

    CT_SOFT_TISSUE = "ct-soft-tissue"
    LUNG = "lung"
    BONE = "bone"
    BRAIN = "brain"
    AUTO = "auto"


_PRESETS = {
    WindowPreset.CT_SOFT_TISSUE: ExportWindow(400, 40),
    WindowPreset.LUNG: ExportWindow(1500, -600),
    WindowPreset.BONE: ExportWindow(1800, 400),
    WindowPreset.BRAIN: ExportWindow(80, 40),
}

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EXPLICIT = re.compile(rf"\s*({_NUMBER})\s*,\s*({_NUMBER})\s*")


def parse_export_window(text: str | None, modality: str | None) -> WindowPreset | ExportWindow:
    """A preset name or ``"W,C"``; ``None`` picks ``ct-soft-tissue`` for CT, else ``auto``.

    Raises
    ------
    InvalidInput
        Neither a preset nor two numbers, or a width <= 0.
    """
    if text is None:
        return WindowPreset.CT_SOFT_TISSUE if modality == "CT" else WindowPreset.AUTO
    try:
        return WindowPreset(text.strip().lower())
    except ValueError:
        pass
    m = _EXPLICIT.fullmatch(text)
    if m is None:
        names = ", ".join(p.value for p in WindowPreset)
        raise InvalidInput(f"--window must be one of {names} or W,C (width,centre), got {text!r}")
    return ExportWindow(float(m.group(1)), float(m.group(2)))


def auto_window(values: np.ndarray) -> ExportWindow:
    """The window from the 0.5th to the 99.5th percentile of ``values`` (width >= 1)."""
    lo, hi = (float(v) for v in np.percentile(values, AUTO_PERCENTILES))
    width = max(hi - lo, 1.0)
    return ExportWindow(width, lo + width / 2)


def resolve_window(window: WindowPreset | ExportWindow, values: np.ndarray) -> ExportWindow:
    """The fixed window of ``window`` (``auto`` computed from ``values``)."""
    if isinstance(window, ExportWindow):
        return window
    return _PRESETS.get(window) or auto_window(values)
