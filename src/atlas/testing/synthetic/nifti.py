"""The synthetic NIfTI-1 mask on the CT's voxel grid (RAS+ affine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _write_nifti(
    path: Path,
    truth: np.ndarray,
    origin: np.ndarray,
    direction: np.ndarray,
    spacing: tuple[float, float, float],
) -> None:
    """NIfTI-1 mask with data ``(i, j, k) = (x, y, z)`` and a RAS+ affine.

    DICOM geometry is LPS+; NIfTI's world space is RAS+, so the affine is
    ``diag(-1, -1, 1) @ lps_affine``: the x and y rows of the voxel-to-world matrix (and of the
    translation) change sign, the voxel grid stays the same.
    """
    import nibabel as nib

    lps = np.eye(4)
    # NIfTI voxel axes are (i, j, k) = array axes (x, y, z) = Volume axes (2, 1, 0)
    lps[:3, :3] = direction[:, ::-1] * np.asarray(spacing[::-1])[None, :]
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(np.ascontiguousarray(truth).transpose(2, 1, 0), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
