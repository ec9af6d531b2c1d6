"""A NIfTI label image onto the voxel grid of an image volume.

The file's RAS+ affine is converted to LPS+ (``diag(-1, -1, 1)``) and must map the same voxel
centres as the volume's, up to a permutation/flip of the axes (which is undone), within a
tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atlas.errors import InvalidInput
from atlas.ingest.labels.grid import GeometryMismatch, Grid, label_dtype
from atlas.ingest.model import LabelVolume, Volume

__all__ = ["nifti_to_labels"]

_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_to_labels(
    path: str | Path,
    volume: Volume,
    names: dict[int, str] | None = None,
    *,
    tolerance_mm: float | None = None,
) -> LabelVolume:
    """A NIfTI label image on ``volume``'s voxel grid.

    The NIfTI affine (RAS+, voxel ``(i, j, k)``) is converted to LPS+ with
    ``diag(-1, -1, 1, 1) @ affine`` and compared with the volume's. The usual layout is
    ``(i, j, k) = (x, y, z)`` of the volume; any permutation or flip of the axes that maps the
    same voxel centres is undone. ``tolerance_mm`` (default: a tenth of the smallest voxel
    spacing) bounds the distance between corresponding voxel centres at the volume's corners.
    Values must be non-negative integers; ``names`` (default ``"label <v>"``) names them.

    Raises
    ------
        GeometryMismatch: "label geometry does not match the image", with the largest
            deviation in mm (a mask of another image).
        InvalidInput: unreadable, truncated or damaged file, non-integer or negative values.
    """
    import nibabel as nib

    grid = Grid(volume)
    try:
        img: Any = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InvalidInput(f"cannot read the NIfTI file ({type(exc).__name__})") from exc
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InvalidInput(f"a NIfTI label image must be 3D, got shape {img.shape}")
    tol = float(tolerance_mm) if tolerance_mm is not None else 0.1 * float(grid.spacing.min())

    nifti_lps = _RAS_FROM_LPS @ np.asarray(img.affine, dtype=np.float64)
    vol_affine = grid.affine()
    # volume voxel (z, y, x, 1) -> nifti voxel (i, j, k, 1)
    try:
        m = np.linalg.solve(nifti_lps, vol_affine)
    except np.linalg.LinAlgError as exc:
        raise InvalidInput("the NIfTI affine is singular") from exc
    perm = np.argmax(np.abs(m[:3, :3]), axis=0)  # nifti axis of each volume axis
    nz, ny, nx = grid.shape
    corners = np.array(
        [[z, y, x] for z in (0, nz - 1) for y in (0, ny - 1) for x in (0, nx - 1)], dtype=float
    )
    vol_pts = corners @ vol_affine[:3, :3].T + vol_affine[:3, 3]
    if sorted(perm.tolist()) != [0, 1, 2]:
        dev = float(np.max(np.abs(vol_pts - vol_pts.mean(0))))
        raise GeometryMismatch(
            "label geometry does not match the image: the NIfTI axes are not aligned with the "
            f"image's (max deviation {dev:.3g} mm)"
        )
    signs = np.sign(m[perm, [0, 1, 2]])
    p = np.zeros((3, 3))
    p[perm, [0, 1, 2]] = signs
    # the volume's first voxel must be the NIfTI's first voxel along each axis (or its last,
    # where the axis is flipped): the deviation is then the real misplacement in mm
    t = np.zeros(3)
    for a, ax in enumerate(perm):
        if signs[a] < 0:
            t[int(ax)] = shape[int(ax)] - 1
    nifti_idx = corners @ p.T + t
    mapped = nifti_idx @ nifti_lps[:3, :3].T + nifti_lps[:3, 3]
    dev = float(np.max(np.linalg.norm(mapped - vol_pts, axis=1)))
    vol_shape_in_nifti = [0, 0, 0]
    for a, ax in enumerate(perm):
        vol_shape_in_nifti[int(ax)] = grid.shape[a]
    if dev > tol or tuple(vol_shape_in_nifti) != shape:
        raise GeometryMismatch(
            "label geometry does not match the image: NIfTI shape "
            f"{'x'.join(map(str, shape))} vs image {nz}x{ny}x{nx} (z,y,x), "
            f"max deviation {dev:.3g} mm (tolerance {tol:.3g} mm)"
        )

    try:
        data = np.asarray(img.dataobj).reshape(shape)
    except Exception as exc:  # truncated or damaged data: nibabel/gzip/zlib raise many types
        raise InvalidInput(
            f"cannot read the NIfTI label data ({type(exc).__name__}): the file is truncated "
            "or damaged"
        ) from exc
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.rint(data)):
            raise InvalidInput("a NIfTI label image must hold integer values")
    elif data.dtype.kind not in "iub":
        raise InvalidInput(f"a NIfTI label image must hold integers, got {data.dtype}")
    if data.size and data.min() < 0:
        raise InvalidInput("a NIfTI label image must not hold negative values")
    max_value = int(data.max()) if data.size else 0
    # reorder nifti axes to volume axes, then flip where needed
    arr = np.transpose(data, axes=[int(a) for a in perm])
    flips = tuple(a for a in range(3) if signs[a] < 0)
    if flips:
        arr = np.flip(arr, axis=flips)
    mask = np.ascontiguousarray(arr, dtype=label_dtype(max_value))
    present = [int(v) for v in np.unique(mask) if v != 0]
    label_names = dict(names) if names is not None else {v: f"label {v}" for v in present}
    return LabelVolume(mask=mask, names=label_names, source="NIFTI")
