"""Export one series of the catalog to files other tools open: NIfTI volumes and PNG slices.

:func:`export_series` finds a series through the catalog (so purpose and consent apply as to a
query), reads it through :class:`atlas.read.Reader` and writes ``<series_id>.nii.gz`` (RAS
affine, ``x, y, z`` voxel order, one mask per label image with ``labels=True``) or
``<series_id>/z0000.png ...`` (windowed axial slices) into a folder, atomically, and records
the export in the site's audit log.

Imported lazily: ``import atlas.export`` loads neither numpy, nibabel nor Pillow.
"""

from __future__ import annotations

from atlas._lazy import attach

_EXPORTS = {
    "ExportFormat": "atlas.export.series",
    "ExportResult": "atlas.export.series",
    "ExportWindow": "atlas.export.window",
    "WindowPreset": "atlas.export.window",
    "export_series": "atlas.export.series",
    "nifti_affine": "atlas.export.nifti",
    "parse_export_window": "atlas.export.window",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = attach("atlas.export", _EXPORTS, globals())
