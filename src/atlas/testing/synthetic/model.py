"""What :func:`~atlas.testing.synthetic.make_study` wrote, and the label values it uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LABEL_NAMES", "SyntheticStudy"]

#: label values of :attr:`SyntheticStudy.truth_labels`
LABEL_NAMES: dict[int, str] = {1: "liver", 2: "liver tumour"}
#: RGB display colours (SEG as CIELab, RTSTRUCT as ROIDisplayColor)
LABEL_RGB: dict[int, tuple[int, int, int]] = {1: (165, 80, 40), 2: (255, 40, 40)}


@dataclass(repr=False)
class SyntheticStudy:
    """What :func:`make_study` wrote, and the ground truth to check ingest against.

    ``ct_files`` are in sorted-slice order (``ct_files[k]`` holds slice ``k`` of
    ``truth_labels``), ``sop_instance_uids`` likewise. Geometry fields follow the
    :class:`atlas.ingest.model.Volume` convention. All UIDs and ``patient_id`` are *original*
    (identifying) values and are also in ``canaries``.
    """

    out_dir: Path
    ct_files: list[Path]
    seg_file: Path | None
    rtstruct_file: Path | None
    nifti_file: Path | None
    canaries: list[str]
    truth_labels: np.ndarray
    hu: np.ndarray | None
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    patient_id: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)
    #: instance number of each slice (sorted-slice order)
    instance_numbers: list[int] = field(default_factory=list)
    transfer_syntax: str = "1.2.840.10008.1.2.1"
    seg_uid: str | None = None
    rtstruct_uid: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of the CT volume."""
        z, y, x = self.truth_labels.shape
        return (int(z), int(y), int(x))

    def affine(self) -> np.ndarray:
        """4x4 matrix mapping a voxel index ``(z, y, x, 1)`` to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def __repr__(self) -> str:
        return f"SyntheticStudy(shape={self.shape}, files={len(self.ct_files)})"
