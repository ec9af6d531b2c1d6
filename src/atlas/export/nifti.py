"""NIfTI geometry: Atlas's LPS ``(z, y, x)`` affine as the RAS ``(i, j, k) = (x, y, z)`` one.

Atlas affines map an array index ``(z, y, x)`` to patient LPS millimetres (DICOM's frame).
NIfTI maps ``(i, j, k)`` to RAS (nibabel's convention, which SimpleITK, 3D Slicer and ITK-SNAP
read back as LPS by negating the first two rows). The export writes the data transposed to
``(x, y, z)`` and the affine ``diag(-1, -1, 1, 1) @ A @ P`` where ``P`` swaps the first and
third index (docs/decisions/0065).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["LPS_TO_RAS", "nifti_affine", "to_nifti_order", "write_nifti"]

#: flips the first two patient axes (LPS <-> RAS)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: (x, y, z, 1) -> (z, y, x, 1)
_XYZ_TO_ZYX = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS, ``x, y, z`` index) affine of an Atlas (LPS, ``z, y, x``) 4 x 4 affine."""
    out: np.ndarray = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64) @ _XYZ_TO_ZYX
    return out


def to_nifti_order(data: np.ndarray) -> np.ndarray:
    """``(z, y, x)`` -> ``(x, y, z)``; a leading channel axis goes last (``(x, y, z, c)``)."""
    if data.ndim == 4:
        return np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0)))
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0)))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write ``data`` (Atlas array order) with Atlas ``affine`` as a gzipped NIfTI-1 file."""
    import nibabel as nib

    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    ras = nifti_affine(affine)
    img = nib.Nifti1Image(to_nifti_order(data), ras)
    img.set_qform(ras, code=1)  # scanner anatomical: SimpleITK and Slicer read the qform
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
