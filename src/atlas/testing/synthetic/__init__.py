"""A seeded, reproducible synthetic DICOM study: CT series, SEG, RTSTRUCT and NIfTI mask.

:func:`make_study` writes what a site would send us for one patient, at realistic sizes, so
ingest, privacy and benchmark code can run on it without any real patient data:

- one CT series of single-frame CT Image Storage files (body phantom of
  :mod:`atlas.testing.phantom` with liver and tumour spheres), full patient-space geometry,
  optionally rotated (``oblique=True``) and compressed losslessly (``transfer_syntax``);
  instance numbers run against the slice order (head first, as scanners number them) and a few
  of them are additionally swapped, and file names follow neither order;
- a DICOM SEG (highdicom, BINARY) with segments ``liver`` and ``liver tumour`` (SNOMED CT);
- an RTSTRUCT with closed planar contours of ``liver`` (which includes the tumour) and
  ``liver tumour`` on every slice they cross;
- a NIfTI-1 mask (``.nii.gz``) on the CT's voxel grid.

Every identifying attribute a site might fill is filled with a distinctive *canary* value and
listed in :attr:`SyntheticStudy.canaries` (with the original UIDs and dates), so a privacy test
can search every byte Atlas writes for them.

Conventions (the same as :class:`atlas.ingest.model.Volume`): arrays are ``(z, y, x)`` in
*sorted-slice order* (ascending along the slice normal ``row x column``), ``origin`` is the LPS
position of voxel 0's centre, ``direction`` column ``a`` is the LPS unit vector of array axis
``a``. Label values: 1 = liver, 2 = liver tumour (the phantom's lungs are not labelled).

Generation streams to disk slab by slab; only the uint8 label map (and, with ``keep_hu``, the
int16 HU volume) is held in memory.

Modules: :mod:`.identity` (UIDs, canaries, shared attributes), :mod:`.ct` (the CT series),
:mod:`.seg`, :mod:`.rtstruct`, :mod:`.nifti` (the label files), :mod:`.model` (what was written)
and :mod:`.study` (:func:`make_study`).
"""

from __future__ import annotations

from atlas.testing.synthetic.ct import supported_transfer_syntaxes
from atlas.testing.synthetic.model import LABEL_NAMES, SyntheticStudy
from atlas.testing.synthetic.study import make_study

__all__ = ["LABEL_NAMES", "SyntheticStudy", "make_study", "supported_transfer_syntaxes"]
