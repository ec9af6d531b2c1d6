"""Labels from DICOM SEG, RTSTRUCT and NIfTI, on the voxel grid of the image they annotate.

Each reader returns an :class:`~atlas.ingest.model.LabelVolume` whose ``mask`` has exactly the
``(z, y, x)`` shape of the :class:`~atlas.ingest.model.Volume` it was aligned to. Alignment is
geometric (patient coordinates, LPS millimetres), never by file order:

- **SEG**: each frame's ``ImagePositionPatient`` is matched to a slice of the volume; the frame
  must lie on the volume's grid (same orientation, rows, columns and pixel spacing). Frames
  without a plane position are matched through the source image they were derived from.
  Label value = segment number. Where segments overlap, the *later* (higher-numbered) segment
  wins. FRACTIONAL segments are thresholded at half their maximum value.
- **RTSTRUCT**: ``CLOSED_PLANAR`` contours are mapped into voxel coordinates with the inverse
  of the volume's affine (so oblique images work), assigned to the slice within half a slice
  gap, and filled with the even-odd rule (contours of one ROI on one slice are XOR-ed, so inner
  contours make holes). A voxel belongs to a contour when its *centre* lies inside the polygon
  (:func:`~atlas.ingest.labels.polygon.fill_polygon`). Label values are ``1..n`` in
  ascending ROI number order over the ROIs that have closed planar contours; later ROIs win
  where they overlap (so a tumour drawn inside its organ stays visible). Contours that
  reference images outside this volume (another series of the same frame of reference) are
  skipped.
- **NIfTI**: the file's RAS+ affine is converted to LPS+ (``diag(-1, -1, 1)``) and must map
  the same voxel centres as the volume's, up to a permutation/flip of the axes (which is
  undone), within a tolerance.

Geometry mismatches raise :class:`~atlas.errors.InvalidInput` with the reason; messages never
contain original UIDs or other identifying values.

Modules: :mod:`~atlas.ingest.labels.grid` (the target voxel grid), ``references`` (what a
label object refers to), ``seg``, ``rtstruct`` with ``polygon`` (rasterising) and
``nifti_labels``.
"""

from atlas.ingest.labels.grid import GeometryMismatch
from atlas.ingest.labels.nifti_labels import nifti_to_labels
from atlas.ingest.labels.polygon import fill_polygon
from atlas.ingest.labels.references import referenced_instance_uids, referenced_series_uids
from atlas.ingest.labels.rtstruct import rtstruct_to_labels
from atlas.ingest.labels.seg import seg_to_labels

__all__ = [
    "GeometryMismatch",
    "fill_polygon",
    "nifti_to_labels",
    "referenced_instance_uids",
    "referenced_series_uids",
    "rtstruct_to_labels",
    "seg_to_labels",
]
