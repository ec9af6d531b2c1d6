"""The data that flows through ingest, from discovered files to loaded volumes and labels.

Everything here may hold *original* (identifying) values — UIDs, patient ids, dates — because it
lives only in memory inside the ingest step. Nothing of it is written anywhere until
:mod:`atlas.privacy.engine` has mapped it; ``repr`` of these objects hides the identifying fields
so a stray log line cannot leak them.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from atlas.privacy.safe_text import visible


@dataclass(frozen=True)
class FileRef:
    """Where an input object lives: a file, or a member of a zip archive.

    ``display`` names it for the operator's own quarantine report (a path they gave us); it is
    never written to a store, index or log line.
    """

    path: str
    member: str | None = None

    @property
    def display(self) -> str:
        """``path`` or ``path!member`` (operator-facing only)."""
        return f"{self.path}!{self.member}" if self.member else self.path

    def read_bytes(self) -> bytes:
        """The object's bytes."""
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    def open(self) -> IO[bytes]:
        """A binary file object (zip members are read into memory)."""
        if self.member is None:
            return open(self.path, "rb")
        return io.BytesIO(self.read_bytes())

    def size(self) -> int:
        """Size in bytes."""
        if self.member is None:
            return Path(self.path).stat().st_size
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).file_size


@dataclass(frozen=True)
class Quarantined:
    """An input that was not ingested, and why (a reason a user can act on)."""

    ref: FileRef
    reason: str
    series: str | None = None  # pseudonymous series id, when known

    def __post_init__(self) -> None:
        # a reason may quote a third-party message: it must not act on a terminal
        object.__setattr__(self, "reason", visible(str(self.reason)))

    def to_json(self) -> dict[str, Any]:
        """JSON form for the operator's quarantine report (control characters escaped)."""
        return {"file": visible(self.ref.display), "reason": self.reason, "series": self.series}


@dataclass(repr=False)
class InstanceInfo:
    """What discovery reads from one DICOM header (no pixel data)."""

    ref: FileRef
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str
    patient_id: str
    frame_of_reference_uid: str | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int = 1
    samples_per_pixel: int = 1
    photometric: str | None = None
    transfer_syntax: str | None = None
    image_orientation: tuple[float, ...] | None = None
    image_position: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    acquisition_number: int | None = None
    instance_number: int | None = None
    burned_in_annotation: str | None = None
    image_type: tuple[str, ...] = ()
    has_pixel_data: bool = True
    #: why a geometry attribute present in the header is invalid (the instance is quarantined)
    geometry_problem: str | None = None
    bits_allocated: int | None = None
    #: Patient's Name and Birth Date (a subject key when Patient ID is absent)
    patient_name: str = ""
    patient_birth_date: str = ""

    def __repr__(self) -> str:
        return f"InstanceInfo(modality={self.modality!r}, rows={self.rows}, cols={self.columns})"


@dataclass(repr=False)
class SeriesGroup:
    """All instances of one (study, series) found in the sources."""

    study_uid: str
    series_uid: str
    modality: str
    instances: list[InstanceInfo] = field(default_factory=list)
    #: the original value the subject pseudonym derives from (see :mod:`atlas.ingest.subjects`)
    subject_key: str = ""
    #: how ``subject_key`` was found: ``map``, ``patient_id``, ``name_birth_date``, ``study_uid``
    subject_source: str = ""
    #: this group is one patient's part of a series whose instances name several patients
    split_by_subject: bool = False

    def __repr__(self) -> str:
        return f"SeriesGroup(modality={self.modality!r}, instances={len(self.instances)})"


@dataclass(repr=False)
class Volume:
    """One consistent volume of a series: pixels in real units plus patient-space geometry.

    ``pixels`` is ``(z, y, x)`` (or ``(c, z, y, x)`` for RGB, ``axes="czyx"``). ``spacing`` is
    per array axis (z, y, x) in mm; ``origin`` the LPS position of voxel 0's centre;
    ``direction`` a 3x3 matrix whose column ``a`` is the LPS unit vector of array axis ``a``
    (z, y, x) — the convention of :func:`atlas.ome.write_image`.
    """

    pixels: np.ndarray
    axes: str
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    regularly_spaced: bool
    slice_positions: list[float]
    #: original SOP Instance UID and frame number (1-based) of each z slice
    frames: list[tuple[str, int]]
    #: a representative header (first instance, pixel data removed), original values
    header: Any
    instances: list[InstanceInfo]
    #: why the volume is irregular, or ``None``
    spacing_note: str | None = None
    #: original Frame of Reference UID
    frame_of_reference_uid: str | None = None
    #: LPS position (mm) of each z slice's first voxel (its Image Position (Patient)); ``None``
    #: for images without patient geometry
    slice_origins: list[tuple[float, float, float]] | None = None
    #: LPS step (mm) between consecutive slices' first voxels when it is not along the normal
    #: (gantry tilt; the image's affine is sheared), else ``None``
    slice_step: tuple[float, float, float] | None = None

    @property
    def tilt_deg(self) -> float | None:
        """Angle (degrees) between :attr:`slice_step` and the slice normal, or ``None``."""
        if self.slice_step is None:
            return None
        step = np.asarray(self.slice_step, dtype=np.float64)
        along = abs(float(step @ np.asarray(self.direction, dtype=np.float64)[:, 0]))
        return float(np.degrees(np.arccos(min(1.0, along / float(np.linalg.norm(step))))))

    def __repr__(self) -> str:
        return f"Volume(shape={self.pixels.shape}, dtype={self.pixels.dtype})"


@dataclass(repr=False)
class LabelVolume:
    """A label mask on a volume's voxel grid, with what each value means.

    ``codes`` maps a value to ``{"scheme": ..., "value": ..., "meaning": ...}`` (e.g. SNOMED CT
    from a SEG's segmented property type); ``source`` is ``"SEG"``, ``"RTSTRUCT"`` or
    ``"NIFTI"``. As the readers return it, ``names`` and ``codes`` hold the object's original
    free text; only :func:`atlas.ingest.label_text.deidentify_labels`'s result is written.
    """

    mask: np.ndarray
    names: dict[int, str]
    source: str
    codes: dict[int, dict[str, str]] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    #: the original UID of the object the labels came from (SEG/RTSTRUCT SOP Instance UID)
    source_uid: str | None = None
    #: what :func:`atlas.ingest.label_text.deidentify_labels` changed, per value
    #: (``"name"``, ``"code"``, ``"code_meaning"``); never the original text
    cleaned: dict[int, list[str]] = field(default_factory=dict)

    def __repr__(self) -> str:  # names may be original free text: counted, not shown
        return (
            f"LabelVolume(source={self.source!r}, shape={self.mask.shape}, "
            f"labels={len(self.names)})"
        )
