"""OME-Zarr v0.5 metadata as typed objects, and their JSON form.

The JSON written here is the contract with other tools (zarr-python, tensorstore, ome-zarr-py,
ngff-zarr, ome-zarr-models, neuroglancer, vizarr). Atlas-specific facts that OME-Zarr cannot
express (the full patient-space affine, window presets, write status) live under the group
attribute ``atlas``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlas.errors import InvalidInput

OME_VERSION = "0.5"
ATLAS_FORMAT = 1
STATUS_WRITING = "writing"
STATUS_COMPLETE = "complete"
#: keys of the ``atlas`` group attribute that Atlas itself writes and reads
ATLAS_KEYS = frozenset(
    {"format", "status", "name", "modality", "spacing", "origin", "direction", "affine",
     "windows", "value_range", "labels", "layout", "levels", "sheared", "tilt_deg"}
)  # fmt: skip


@dataclass(frozen=True)
class WindowPreset:
    """A display window: ``center`` and ``width`` in stored units (HU for CT)."""

    name: str
    center: float
    width: float

    @property
    def start(self) -> float:
        """Lowest value shown (black)."""
        return self.center - self.width / 2

    @property
    def end(self) -> float:
        """Highest value shown (white)."""
        return self.center + self.width / 2


#: standard CT presets (Hounsfield units)
CT_WINDOWS = (
    WindowPreset("soft tissue", 40.0, 400.0),
    WindowPreset("lung", -600.0, 1500.0),
    WindowPreset("bone", 400.0, 1800.0),
    WindowPreset("brain", 40.0, 80.0),
)


@dataclass(frozen=True)
class Axis:
    """One array axis: name (``c``, ``z``, ``y``, ``x``), OME type and unit."""

    name: str
    type: str
    unit: str | None = None

    def to_json(self) -> dict[str, Any]:
        """OME axis JSON."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.unit:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True)
class LevelInfo:
    """One resolution level: its path, shape, storage layout and coordinate transform."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    factors: tuple[int, ...]


@dataclass(frozen=True)
class LabelInfo:
    """A label image's display and meaning: value -> name, colour (RGBA) and properties."""

    name: str
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    properties: dict[int, dict[str, Any]] = field(default_factory=dict)
    voxel_counts: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageMetadata:
    """Everything the reader knows about an image without touching pixels."""

    name: str
    axes: tuple[Axis, ...]
    dtype: str
    levels: tuple[LevelInfo, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, float, float]
    direction: np.ndarray
    affine: np.ndarray
    modality: str | None
    windows: tuple[WindowPreset, ...]
    labels: tuple[str, ...]
    value_range: tuple[float, float] | None
    layout: dict[str, Any]
    extra: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full-resolution level."""
        return self.levels[0].shape

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        """Names of the spatial axes, in array order."""
        return tuple(a.name for a in self.axes if a.type == "space")


def make_axes(axes: str) -> tuple[Axis, ...]:
    """Axis objects for an axis string such as ``"zyx"``, ``"yx"``, ``"czyx"``."""
    if axes not in ("zyx", "yx", "czyx", "cyx"):
        raise InvalidInput(f"axes must be one of 'zyx', 'yx', 'czyx', 'cyx', got {axes!r}")
    return tuple(Axis("c", "channel") if a == "c" else Axis(a, "space", "millimeter") for a in axes)


def default_direction(n_spatial: int) -> np.ndarray:
    """Direction cosines of an axis-aligned image: z->S... i.e. array x = patient x, etc.

    Column ``a`` is the patient-space (LPS, x/y/z) unit vector of spatial array axis ``a``.
    """
    full = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # columns z, y, x
    return full[:, 3 - n_spatial :]


def check_direction(direction: Any, n_spatial: int) -> np.ndarray:
    """Validate direction cosines (3 x n_spatial, orthonormal columns)."""
    d = np.asarray(direction, dtype=np.float64)
    if d.shape != (3, n_spatial):
        raise InvalidInput(
            f"direction must be a 3x{n_spatial} matrix (one LPS column per spatial axis), "
            f"got shape {d.shape}"
        )
    if not np.all(np.isfinite(d)):
        raise InvalidInput("direction cosines must be finite")
    gram = d.T @ d
    if not np.allclose(gram, np.eye(n_spatial), atol=1e-3):
        raise InvalidInput(
            "direction cosines must be orthonormal columns (unit length, perpendicular); "
            f"got D^T D = {np.round(gram, 4).tolist()}"
        )
    return d


def check_slice_step(
    slice_step: Any, spacing: tuple[float, ...], direction: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """Validate the slice step of a sheared stack; return it and its tilt in degrees.

    ``None`` stays ``None``. Otherwise the image must be 3-D, the step three finite numbers
    whose component along the slice normal (``direction`` column 0) equals ``spacing[0]``
    (within 1e-3 relative) and that is not along the normal (a step along the normal is not a
    shear: pass ``None``). The affine's first column becomes the step, so every slice's first
    voxel lands on its own position; the other columns stay ``direction * spacing``.
    """
    if slice_step is None:
        return None
    if len(spacing) != 3:
        raise InvalidInput("slice_step (a sheared slice axis) needs a 3-D image")
    step = np.asarray(slice_step, dtype=np.float64).reshape(-1)
    if step.shape != (3,) or not np.all(np.isfinite(step)):
        raise InvalidInput("slice_step must be 3 finite numbers (LPS mm per slice)")
    along = float(step @ direction[:, 0])
    if abs(along - spacing[0]) > 1e-3 * spacing[0]:
        raise InvalidInput(
            f"slice_step's component along the slice normal ({along:.6g} mm) must equal the "
            f"z spacing ({spacing[0]:.6g} mm)"
        )
    tilt = float(np.degrees(np.arccos(min(1.0, along / float(np.linalg.norm(step))))))
    if tilt < 1e-6:
        raise InvalidInput("slice_step is along the slice normal: not a shear, pass None")
    return step, tilt


def ome_translation(origin: tuple[float, float, float], n_spatial: int) -> tuple[float, ...]:
    """The level-0 OME ``translation``: voxel 0's patient position (LPS mm), ``origin`` reversed.

    The world axes are ``z, y, x`` = patient S, P, L (for 2-D ``y, x`` = P, L).

    This is how ITK/SimpleITK define an origin and how ngff-zarr's ITK bridge maps it. For an
    image whose array axes run along +S, +P, +L every voxel's OME position is its patient
    position; otherwise voxel 0 is and only ``atlas.affine`` is exact for the rest (see
    ``docs/decisions/0016-ome-translation-and-default-direction.md``).
    """
    return tuple(float(v) for v in reversed(origin))[3 - n_spatial :]


def affine_matrix(
    spacing: tuple[float, ...], origin: tuple[float, float, float], direction: np.ndarray
) -> np.ndarray:
    """4x4 (for 2-D: 4x3) matrix mapping homogeneous array indices to LPS millimetres."""
    n = len(spacing)
    a = np.zeros((4, n + 1))
    a[:3, :n] = direction * np.asarray(spacing)[None, :]
    a[:3, n] = origin
    a[3, n] = 1.0
    return a


def multiscales_json(
    name: str, axes: tuple[Axis, ...], levels: tuple[LevelInfo, ...], method: str
) -> list[dict[str, Any]]:
    """The ``multiscales`` list of OME-Zarr v0.5."""
    return [
        {
            "name": name,
            "axes": [a.to_json() for a in axes],
            "datasets": [
                {
                    "path": lv.path,
                    "coordinateTransformations": [
                        {"type": "scale", "scale": list(lv.scale)},
                        {"type": "translation", "translation": list(lv.translation)},
                    ],
                }
                for lv in levels
            ],
            "type": method,
            "metadata": {"method": f"atlas.kernels.downsample_{method}", "version": "1"},
        }
    ]


def omero_json(
    name: str,
    windows: tuple[WindowPreset, ...],
    value_range: tuple[float, float],
    n_channels: int,
    default_z: int,
) -> dict[str, Any]:
    """The ``omero`` rendering block: the first preset is the default window of each channel."""
    lo, hi = value_range
    first = windows[0] if windows else WindowPreset("full range", (lo + hi) / 2, max(hi - lo, 1))
    colors = ["FFFFFF"] if n_channels == 1 else ["FF0000", "00FF00", "0000FF", "FFFFFF"]
    return {
        "name": name,
        "channels": [
            {
                "label": f"{name}" if n_channels == 1 else f"channel {c}",
                "color": colors[c % len(colors)],
                "active": True,
                "coefficient": 1,
                "family": "linear",
                "inverted": False,
                "window": {
                    "min": float(lo),
                    "max": float(hi),
                    "start": float(first.start),
                    "end": float(first.end),
                },
            }
            for c in range(n_channels)
        ],
        "rdefs": {"model": "greyscale" if n_channels == 1 else "color", "defaultZ": default_z},
    }


def label_json(info: LabelInfo) -> dict[str, Any]:
    """The ``image-label`` block of OME-Zarr v0.5 for one label image."""
    values = sorted(set(info.names) | set(info.colors) | set(info.properties))
    colors = [
        {"label-value": v, "rgba": list(info.colors.get(v, default_color(v)))} for v in values
    ]
    props = [
        {
            "label-value": v,
            **({"name": info.names[v]} if v in info.names else {}),
            **info.properties.get(v, {}),
        }
        for v in values
    ]
    return {"colors": colors, "properties": props, "source": {"image": "../../"}}


def default_color(value: int) -> tuple[int, int, int, int]:
    """A stable, distinguishable RGBA colour for a label value (0 is transparent)."""
    if value == 0:
        return (0, 0, 0, 0)
    palette = [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    ]  # fmt: skip
    r, g, b = palette[(value - 1) % len(palette)]
    return (r, g, b, 255)
