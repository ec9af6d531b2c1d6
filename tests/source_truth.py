"""The truth for ingested pixels, computed from the source DICOM files with pydicom alone.

Each source series (same Series Instance UID, orientation and size) is read slice by slice,
put in patient order (MONOCHROME1 inverted over the volume as the
standard display does; sorted by position along the slice normal, the cross product of the row
and column direction cosines of Image Orientation (Patient)) and stacked. Tests compare every
slice of every image an ingest wrote with these stacks, so a writer that reverses, shuffles or
drops slices is caught whatever the geometry metadata says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SourceSeries:
    """One source volume in patient order."""

    positions: list[tuple[float, float, float]]  # Image Position (Patient) of each slice
    pixels: np.ndarray  # (z, y, x), modality LUT applied
    files: list[Path]


def source_series(paths: list[Path]) -> list[SourceSeries]:
    """Every single-frame grayscale image series in ``paths`` (files or folders)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    files: list[Path] = []
    for p in paths:
        files += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    groups: dict[tuple, list[tuple[float, Path, Any, list[float]]]] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception:
            continue
        if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            continue
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            continue
        iop = [float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
        ipp = [float(v) for v in ds.get("ImagePositionPatient", [0, 0, 0])]
        normal = np.cross(iop[:3], iop[3:])
        key = (str(ds.SeriesInstanceUID), tuple(round(v, 4) for v in iop), ds.Rows, ds.Columns)
        groups.setdefault(key, []).append((float(np.dot(ipp, normal)), f, ds, ipp))
    out = []
    for items in groups.values():
        items.sort(key=lambda t: t[0])
        stored = np.stack([t[2].pixel_array for t in items])
        if items[0][2].PhotometricInterpretation == "MONOCHROME1":
            # white is low: invert over the whole volume in stored units, before rescaling
            stored = (int(stored.min()) + int(stored.max()) - stored.astype(np.int64)).astype(
                stored.dtype
            )
        pixels = np.stack([apply_modality_lut(stored[z], t[2]) for z, t in enumerate(items)])
        positions = [(t[3][0], t[3][1], t[3][2]) for t in items]
        out.append(SourceSeries(positions=positions, pixels=pixels, files=[t[1] for t in items]))
    return out


def _same(truth: np.ndarray, got: np.ndarray) -> bool:
    """Equal values; a non-integral rescale is stored as float32, so compare in float32."""
    if got.dtype.kind == "f":
        truth = truth.astype(got.dtype)
    return bool(np.array_equal(truth, got))


def assert_images_match_sources(
    store: object, image_paths: list[str], sources: list[SourceSeries]
) -> None:
    """Each written image equals, slice by slice at level 0, a run of consecutive slices (in
    patient order) of one source series that starts at the image's origin, and together the
    images cover every source slice exactly once. (A series may be written as one image or,
    where the ingest splits it, e.g. at a gap, as several parts.)"""
    from atlas.ome import open_image

    covered: set[tuple[int, int]] = set()
    for path in image_paths:
        image = open_image(store, path)
        got = image.read(0)
        nz = got.shape[0]
        places = [
            (k, j)
            for k, src in enumerate(sources)
            for j, pos in enumerate(src.positions)
            if src.pixels.shape[1:] == got.shape[1:]
            and j + nz <= src.pixels.shape[0]
            and np.allclose(pos, image.metadata.origin, atol=1e-3)
        ]
        assert places, f"{path}: no source slice of size {got.shape[1:]} at its origin"
        equal = [
            (k, j)
            for k, j in places
            if _same(sources[k].pixels[j : j + nz], got)
            and not any((k, z) in covered for z in range(j, j + nz))
        ]
        if not equal and len(places) == 1:
            k, j = places[0]
            truth = sources[k].pixels[j : j + nz]
            bad = [z for z in range(nz) if not _same(truth[z], got[z])]
            raise AssertionError(
                f"{path}: slices {bad} of {nz} differ from the source in patient order"
            )
        assert equal, f"{path}: pixels equal no source slices at that origin in patient order"
        k, j = equal[0]
        covered.update((k, z) for z in range(j, j + nz))
    missing = [
        str(src.files[z]) for k, src in enumerate(sources) for z in range(len(src.files))
        if (k, z) not in covered
    ]  # fmt: skip
    assert not missing, f"source slices never written: {missing}"
