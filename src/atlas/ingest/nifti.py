"""NIfTI images as ingest sources: one file, one image.

NIfTI carries no patient identity; the file name stands in for the subject (it is hashed with the
site key like a patient id, so a name that happens to identify someone is never stored). The
NIfTI header itself (``descrip``, ``aux_file``, ...) is not kept: only geometry and voxels.

A file that cannot be ingested is quarantined with its reason and the run goes on: a data type
the image writer does not store (complex, RGB, 64-bit integers, ...), an image that would decode
to more than the limit (checked from the header, before any voxel is read), truncated or corrupt
data, or any other failure while reading it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas import records
from atlas.errors import ConfigError, InvalidInput
from atlas.ingest import claims
from atlas.ingest.model import FileRef, Quarantined, Volume
from atlas.ingest.safe_io import ReadLimits, open_member, open_regular
from atlas.ingest.series import (
    IngestOptions,
    Scrubber,
    SeriesOutcome,
    _stored_size,
    already_done,
    finish,
    label_failure,
    make_deidentifier,
)
from atlas.storage import Store

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
#: voxel types an image is stored with (those of :func:`atlas.ome.write_image`)
SUPPORTED_DTYPES = frozenset(
    np.dtype(t)
    for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
)


@dataclass(repr=False)
class NiftiTask:
    """One NIfTI image to ingest."""

    store: Store
    site: str
    collection: str
    ref: FileRef
    nifti_labels: list[FileRef] = field(default_factory=list)
    options: IngestOptions = field(default_factory=IngestOptions)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _checked_header(img: Any, shape: tuple[int, ...], limits: ReadLimits) -> None:
    """Refuse unsupported voxel types and images over the limit, from the header alone."""
    from atlas.ingest.safe_io import format_size

    raw = np.dtype(img.get_data_dtype())
    if raw.fields is not None or raw.kind in "cVSUO" or raw not in SUPPORTED_DTYPES:
        kind = "RGB" if raw.fields is not None else str(raw)
        raise InvalidInput(
            f"unsupported NIfTI data type {kind} (supported: "
            "uint8, int8, uint16, int16, uint32, int32, float32, float64)"
        )
    slope, inter = (getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0))
    scaled = not (slope in (None, 1.0) and inter in (None, 0.0))
    depth = max(raw.itemsize, 8) if scaled else raw.itemsize
    voxels = int(np.prod(shape, dtype=np.float64))
    declared = voxels * depth
    if declared > limits.max_image_bytes:
        raise InvalidInput(
            f"NIfTI image would decode to {format_size(declared)}, over the limit of "
            f"{format_size(limits.max_image_bytes)} (raise --max-image-bytes to accept it)"
        )


def load_nifti_volume(path: str, *, limits: ReadLimits | None = None) -> Volume:
    """A NIfTI file as a :class:`Volume` (z, y, x) in Atlas's LPS geometry convention.

    Raises :class:`InvalidInput` (a quarantine reason) for unreadable, truncated or corrupt
    files, unsupported voxel types and images over ``limits`` (checked before reading voxels).
    """
    import nibabel as nib

    limits = limits or ReadLimits()
    try:
        img: Any = nib.load(path)
    except Exception as exc:
        raise InvalidInput(f"not a readable NIfTI file ({type(exc).__name__})") from exc
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InvalidInput(f"only 3-D NIfTI images are supported, this one has shape {shape}")
    _checked_header(img, shape, limits)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except MemoryError:
        raise InvalidInput("NIfTI image does not fit in memory") from None
    except Exception as exc:  # truncated or corrupt data: nibabel raises several kinds
        raise InvalidInput(f"truncated or corrupt NIfTI data ({type(exc).__name__})") from None
    pixels = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    if (
        pixels.dtype.kind == "f"
        and np.all(np.isfinite(pixels))
        and np.all(pixels == np.round(pixels))
    ):
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo >= -32768 and hi <= 32767:
            pixels = pixels.astype(np.int16)
    elif pixels.dtype == np.float64:
        pixels = pixels.astype(np.float32)
    affine = LPS_FROM_RAS @ np.asarray(img.affine, dtype=np.float64)[:3]
    cols = [affine[:, 2], affine[:, 1], affine[:, 0]]  # array axes z, y, x = NIfTI k, j, i
    spacing = tuple(float(np.linalg.norm(c)) for c in cols)
    if min(spacing) <= 0:
        raise InvalidInput("NIfTI affine has a zero-length axis")
    direction = np.stack([c / s for c, s in zip(cols, spacing, strict=True)], axis=1)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise InvalidInput("NIfTI affine is sheared; only rigid orientations are supported")
    origin = tuple(float(v) for v in affine[:, 3])
    positions = [
        float(np.dot(direction[:, 0], affine[:, 3]) + z * spacing[0])
        for z in range(pixels.shape[0])
    ]
    return Volume(
        pixels=pixels,
        axes="zyx",
        spacing=(spacing[0], spacing[1], spacing[2]),
        origin=(origin[0], origin[1], origin[2]),
        direction=direction,
        regularly_spaced=True,
        slice_positions=positions,
        frames=[("", z + 1) for z in range(pixels.shape[0])],
        header=None,
        instances=[],
    )


def _digest(path: str, limits: ReadLimits) -> tuple[str, int]:
    """SHA-256 and size of a regular file, streamed (the object limit applies)."""
    sha = hashlib.sha256()
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        limits.check_object(size, "NIfTI file")
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest(), size


@contextlib.contextmanager
def _local_copy(ref: FileRef, limits: ReadLimits) -> Iterator[str]:
    """A path nibabel can load.

    The file itself, or a zip member streamed (with the object limit) into a private temporary
    file that is removed afterwards.
    """
    if ref.member is None:
        yield ref.path
        return
    import shutil
    import tempfile
    import zipfile

    suffix = ".nii.gz" if ref.member.lower().endswith(".gz") else ".nii"
    with tempfile.TemporaryDirectory(prefix="atlas-nifti-") as tmp:
        target = os.path.join(tmp, "member" + suffix)
        try:
            with (
                open_regular(ref.path) as archive,
                zipfile.ZipFile(archive) as zf,
                open_member(zf, ref.member, limits) as src,
                open(target, "wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError, EOFError) as exc:
            raise InvalidInput(f"cannot read zip member ({type(exc).__name__})") from None
        yield target


@claims.scoped
def ingest_nifti(task: NiftiTask) -> SeriesOutcome:
    """Ingest one NIfTI image (and any ``--labels`` masks that fit it).

    Never raises for bad input: an unusable file, or any failure while ingesting it,
    quarantines that file.
    """
    try:
        return _ingest_nifti(task)
    except ConfigError:
        raise
    except InvalidInput as exc:
        return SeriesOutcome(series_id="", status="quarantined", n_files=1,
                             quarantined=[Quarantined(task.ref, exc.message)])  # fmt: skip
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        reason = f"internal error {type(exc).__name__}{at}"  # no message: it may name values
        return SeriesOutcome(series_id="", status="failed", n_files=1,
                             quarantined=[Quarantined(task.ref, reason)])  # fmt: skip


def _ingest_nifti(task: NiftiTask) -> SeriesOutcome:
    t0 = time.perf_counter()
    deid = make_deidentifier(task.options)
    with _local_copy(task.ref, task.options.limits) as local:
        return _ingest_local(task, local, t0, deid)


def _ingest_local(task: NiftiTask, local: str, t0: float, deid: Any) -> SeriesOutcome:
    from atlas.ingest.label_text import deidentify_labels, label_properties
    from atlas.ingest.labels import GeometryMismatch, nifti_to_labels
    from atlas.ome import LabelSpec, write_image

    try:
        digest, size = _digest(local, task.options.limits)
    except OSError as exc:
        raise InvalidInput(f"cannot read file ({type(exc).__name__})") from None
    stem = _stem(task.ref.member or task.ref.path)
    subject_id = deid.subject_id(f"nifti:{stem}")
    study_id = deid.uid(f"nifti-study:{stem}")
    series_id = deid.uid(f"nifti-series:{digest}")
    out = SeriesOutcome(series_id=series_id, status="written", n_files=1, bytes_in=size)
    store, collection = task.store, task.collection
    if already_done(store, collection, out, [task.ref]):
        return out
    try:
        volume = load_nifti_volume(local, limits=task.options.limits)
    except InvalidInput as exc:
        out.status = "quarantined"
        out.quarantined.append(Quarantined(task.ref, str(exc), series_id))
        return out
    labels: dict[str, Any] = {}
    masks = []
    for k, ref in enumerate(task.nifti_labels):
        try:
            lab = deidentify_labels(nifti_to_labels(ref.path, volume))
        except GeometryMismatch:
            continue
        except Exception as exc:  # a bad mask is the mask's problem, not the image's
            why = label_failure("NIfTI mask", exc, Scrubber(set()))
            out.mask_problems.setdefault(ref.path, why)
            continue
        labels[f"nifti-{k}"] = LabelSpec(
            lab.mask,
            names=dict(lab.names),
            colors=dict(lab.colors),
            properties=label_properties(lab),
        )
        masks.append((f"nifti-{k}", lab))
        out.used_masks.append(ref.path)
    path = f"{collection}/{subject_id}/{study_id}/{series_id}.ome.zarr"
    base = {"site": task.site, "collection": collection, "subject_id": subject_id,
            "study_id": study_id, "series_id": series_id}  # fmt: skip
    image = write_image(
        store, path, volume.pixels, spacing=volume.spacing, origin=volume.origin,
        direction=volume.direction, name=series_id, labels=labels,
        extra_attributes={"series": {**base, "source_format": "NIfTI"}}, overwrite=True,
    )  # fmt: skip
    nz, ny, nx = volume.pixels.shape
    image_ids = [f"{series_id}/{z + 1}" for z in range(nz)]
    vbase = {**base, "volume": 0}
    image_rows = [
        {**vbase, "image_id": image_ids[z], "sop_instance_id": None, "frame": z + 1,
         "z_index": z, "position_mm": volume.slice_positions[z], "image_path": path,
         "modality": None, "rows": ny, "columns": nx, "annotated": False}
        for z in range(nz)
    ]  # fmt: skip
    annotation_rows = []
    for name, lab in masks:
        rows = records.annotation_rows(lab.mask, base={**vbase, "image_path": path},
                                       image_ids=image_ids, label_image=name, names=lab.names,
                                       codes=lab.codes, source="NIFTI",
                                       cleaned=lab.cleaned)  # fmt: skip
        for r in rows:
            image_rows[r["z_index"]]["annotated"] = True
        annotation_rows.extend(rows)
    series_row = {
        **vbase, "image_store": store.url, "image_path": path, "modality": None,
        "spacing_z": volume.spacing[0], "spacing_y": volume.spacing[1],
        "spacing_x": volume.spacing[2], "size_z": nz, "size_y": ny, "size_x": nx,
        "channels": 1, "dtype": str(volume.pixels.dtype), "regularly_spaced": True,
        "part": 1, "parts": 1, "levels": len(image.metadata.levels), "labels": list(labels),
        "source_format": "NIfTI",
        "subject_source": "file_name", "split_by_subject": False,
    }  # fmt: skip
    out.images = [path]
    out.bytes_out = _stored_size(store, path)
    finish(store, base, out, [series_row], image_rows, annotation_rows)
    out.seconds = time.perf_counter() - t0
    return out
