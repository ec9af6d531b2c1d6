"""Decode one consistent volume into real-unit pixels with its patient-space geometry.

Input is what :func:`atlas.ingest.geometry.split_series` produces: several single-frame
instances of one volume, or one multi-frame instance (enhanced objects ordered from their
per-frame functional groups, legacy multi-frame objects from *Grid Frame Offset Vector* or
*Spacing Between Slices*).

Pixel values, in this order:

1. decoded by pydicom's decoders (native, deflate, RLE, JPEG baseline/extended/lossless,
   JPEG-LS, JPEG 2000 and HTJ2K through pylibjpeg/pyjpegls/Pillow). YBR_FULL/YBR_FULL_422
   colour is converted to RGB by pydicom's :func:`pydicom.pixels.convert_color_space`
   (``raw=False``), JPEG 2000's YBR_ICT/RCT by the codec; PALETTE COLOR is mapped to RGB by
   :func:`pydicom.pixels.apply_color_lut`. Colour volumes have axes ``"czyx"`` (3 channels).
2. MONOCHROME1 is turned into MONOCHROME2 semantics (higher = brighter) in *stored* units,
   before any rescale: ``value' = min + max - value`` with the minimum and maximum stored
   value of the whole volume, so the value range is unchanged and every slice is inverted
   the same way. The returned ``header`` keeps its original PhotometricInterpretation.
3. the Modality LUT or *Rescale Slope/Intercept* (per slice, or per frame from the
   *Pixel Value Transformation* functional group) through
   :func:`pydicom.pixels.apply_modality_lut`, so CT is in Hounsfield units; RT dose grids are
   also multiplied by *Dose Grid Scaling* (Gy).

Result dtype: ``int16`` for CT whose values fit; otherwise the smallest of
``uint8/uint16/int16/int32`` that holds integral values (``int64`` beyond), ``float32`` when a
value is not integral; colour keeps the decoder's unsigned dtype.

Memory: the decoded size the headers declare (slices x rows x columns x samples x bytes per
sample; palette colour as three 16-bit channels) is checked against the limit
(:class:`~atlas.ingest.safe_io.ReadLimits`) before any pixel data is read; each input is read
through :func:`~atlas.ingest.dicom_io.read_dataset` (regular files, zip members and deflated
data streamed with the limit). Frames are decoded one at a time into one preallocated array of
the stored dtype; the rescale runs slice by slice (one float64 slice at a time) into the output
array, which is the same array when the dtypes agree.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.uid import UID

from atlas.dicom.functional_groups import functional_group_item, is_enhanced
from atlas.dicom.geometry_values import geometry_problem, vector_problem
from atlas.errors import InvalidInput
from atlas.ingest.dicom_io import parse_dataset, read_dataset
from atlas.ingest.geometry import (
    POSITION_TOLERANCE_MM,
    StackGeometry,
    distances_along_normal,
    same_orientation,
    same_spacing,
    slice_normal,
    sort_by_position,
    stack_geometry,
)
from atlas.ingest.model import FileRef, InstanceInfo, Volume
from atlas.ingest.pixel_values import (
    ValueMap,
    first_positive,
    invert_monochrome1,
    rescale,
    value_map,
)
from atlas.ingest.safe_io import ReadLimits, open_member, open_regular

__all__ = ["check_decodable", "load_volume"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def check_decodable(transfer_syntax: str | None) -> None:
    """Check that an installed decoder handles ``transfer_syntax``.

    Raise :class:`InvalidInput` ``"cannot decode transfer syntax <name>"`` when none does.
    """
    uid = UID(transfer_syntax or "")
    if not transfer_syntax:
        raise InvalidInput("cannot decode transfer syntax (none given)")
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        raise InvalidInput(f"cannot decode transfer syntax {uid.name}") from None
    if not decoder.is_available:
        raise InvalidInput(
            f"cannot decode transfer syntax {uid.name} (no decoder plugin is installed; "
            "install the 'ingest' extras)"
        )


# ----------------------------------------------------------------------------------------
# reading


class _Reader:
    """Reads full data sets within ``limits``; each zip archive is opened once per volume."""

    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self._zips: dict[str, zipfile.ZipFile] = {}

    def read(self, ref: FileRef) -> Dataset:
        if ref.member is None:
            return read_dataset(ref, stop_before_pixels=False, limits=self.limits)
        try:
            zf = self._zips.get(ref.path)
            if zf is None:
                # a ZipFile does not close a file object it was given: close() does
                zf = self._zips[ref.path] = zipfile.ZipFile(open_regular(ref.path))
            member = open_member(zf, ref.member, self.limits)
        except InvalidInput as exc:
            raise type(exc)(exc.message, location=ref.display) from None
        except (zipfile.BadZipFile, zlib.error, OSError, KeyError, RuntimeError) as exc:
            raise InvalidInput(
                f"cannot read zip member ({exc.__class__.__name__})", location=ref.display
            ) from None
        with member:
            return parse_dataset(
                member, stop_before_pixels=False, location=ref.display, limits=self.limits
            )

    def close(self) -> None:
        for zf in self._zips.values():
            fp = zf.fp
            zf.close()
            if fp is not None:
                fp.close()
        self._zips.clear()


def _transfer_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else None


def _strip_pixels(ds: Dataset) -> Dataset:
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    return ds


# ----------------------------------------------------------------------------------------
# per-frame attributes


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        values = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return values if len(values) == n else None


def _spacing(
    value: object, name: str = "Pixel Spacing", strict: bool = True
) -> tuple[float, ...] | None:
    """Two positive finite spacings, ``None`` when absent.

    When invalid, :class:`InvalidInput` (``strict``: images with patient geometry) or ``None``
    (noted later, see ``_load``).
    """
    problem = vector_problem(value, 2, name, positive=True)
    if problem is not None:
        if strict:
            raise InvalidInput(problem)
        return None
    return _floats(value, 2)


# ----------------------------------------------------------------------------------------
# geometry of multi-frame objects


def _multiframe_geometry(ds: Dataset, n: int) -> tuple[list[int], StackGeometry]:
    """Frame order (indices into the file's frames) and geometry of a multi-frame object."""
    planes = "ImagePositionPatient" in ds or "ImageOrientationPatient" in ds
    if is_enhanced(ds):
        planes = planes or functional_group_item(ds, "PlanePositionSequence", 0) is not None
    top_spacing = _spacing(ds.get("PixelSpacing"), strict=planes) or _spacing(
        ds.get("ImagerPixelSpacing"), "Imager Pixel Spacing", strict=planes
    )
    if is_enhanced(ds):
        measures = functional_group_item(ds, "PixelMeasuresSequence", 0)
        spacing = (
            _spacing(measures.get("PixelSpacing"), strict=planes) if measures else None
        ) or top_spacing
        fallback = first_positive(
            measures.get("SpacingBetweenSlices") if measures else None,
            measures.get("SliceThickness") if measures else None,
            ds.get("SpacingBetweenSlices"),
            ds.get("SliceThickness"),
        )
        positions: list[tuple[float, ...] | None] = []
        orientations: list[tuple[float, ...] | None] = []
        for f in range(n):
            pos = functional_group_item(ds, "PlanePositionSequence", f)
            ori = functional_group_item(ds, "PlaneOrientationSequence", f)
            positions.append(_floats(pos.get("ImagePositionPatient"), 3) if pos else None)
            orientations.append(_floats(ori.get("ImageOrientationPatient"), 6) if ori else None)
        iop = orientations[0]
        invalid = [
            f
            for f in range(n)
            if (positions[f] is None) != (positions[0] is None)
            or (positions[f] is not None and not all(np.isfinite(positions[f] or ())))
            or (orientations[f] is not None and not all(np.isfinite(orientations[f] or ())))
        ]
        if invalid:
            raise InvalidInput(
                f"invalid plane position or orientation in {len(invalid)} frame(s) of this "
                f"multi-frame object (first: frame {invalid[0] + 1}); the frames cannot be placed"
            )
        if iop is not None and all(p is not None for p in positions):
            if not all(o is not None and same_orientation(iop, o) for o in orientations):
                raise InvalidInput(
                    "frames of this multi-frame object have different orientations (not one volume)"
                )
            for f in range(1, n):
                frame_measures = functional_group_item(ds, "PixelMeasuresSequence", f)
                frame_spacing = (
                    _spacing(frame_measures.get("PixelSpacing")) if frame_measures else None
                ) or top_spacing
                if not same_spacing(spacing, frame_spacing):
                    raise InvalidInput(
                        "frames of this multi-frame object have different pixel spacings "
                        "(not one volume)"
                    )
            located = [p for p in positions if p is not None]
            dists = distances_along_normal(located, iop)
            order = sorted(range(n), key=lambda k: dists[k])
            ordered = [dists[k] for k in order]
            repeats = sum(1 for a, b in pairwise(ordered) if b - a <= POSITION_TOLERANCE_MM)
            if repeats:
                raise InvalidInput(
                    f"multi-frame object has {n} frames at {n - repeats} positions "
                    "(temporal, multi-echo or multi-stack frames are not one volume)"
                )
            geometry = stack_geometry([located[k] for k in order], iop, spacing, fallback, n)
            return order, geometry
        return list(range(n)), stack_geometry(None, None, spacing, fallback, n)

    problem = geometry_problem(
        position=ds.get("ImagePositionPatient"), orientation=ds.get("ImageOrientationPatient")
    )
    if problem is not None:
        raise InvalidInput(problem)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    fallback = first_positive(ds.get("SpacingBetweenSlices"), ds.get("SliceThickness"))
    if iop is None or ipp is None:
        return list(range(n)), stack_geometry(None, None, top_spacing, fallback, n)
    normal = slice_normal(iop)
    raw_offsets = ds.get("GridFrameOffsetVector")
    problem = vector_problem(raw_offsets, n, "Grid Frame Offset Vector") if n > 1 else None
    if problem is not None:  # never placed at a default spacing instead
        raise InvalidInput(f"{problem} (one per frame)")
    offsets = _floats(raw_offsets, n)
    if offsets is not None:
        relative = [o - offsets[0] for o in offsets]  # absolute (z) form starts at IPP too
    else:
        relative = [k * (fallback or 1.0) for k in range(n)]
    origin = np.asarray(ipp, dtype=np.float64)
    frame_positions = [tuple((origin + r * normal).tolist()) for r in relative]
    order = sorted(range(n), key=lambda k: relative[k])
    geometry = stack_geometry([frame_positions[k] for k in order], iop, top_spacing, fallback, n)
    if offsets is None and not fallback and n > 1:
        placeholder = (
            "no Grid Frame Offset Vector, Slice Thickness or Spacing Between Slices: the frame "
            "spacing of 1.0 mm is a placeholder"
        )
        note = f"{geometry.note}; {placeholder}" if geometry.note else placeholder
        geometry = replace(geometry, note=note)
    return order, geometry


# ----------------------------------------------------------------------------------------
# value handling


# ----------------------------------------------------------------------------------------
# decoding


def _decode_error(exc: Exception, location: str) -> InvalidInput:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    detail = f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
    return InvalidInput(f"corrupt or undecodable pixel data ({detail})", location=location)


@dataclass
class _Target:
    """The preallocated array frames are decoded into.

    ``(z, y, x)``, or ``(c, z, y, x)`` for colour (frames arrive as ``(y, x, c)``).
    """

    nz: int
    color: bool
    raw: np.ndarray | None = None

    def store(self, z: int, frame: np.ndarray, location: str) -> None:
        if self.color:
            if frame.ndim != 3:
                raise InvalidInput(f"expected a colour frame, got shape {frame.shape}")
            frame = np.moveaxis(frame, -1, 0)
        elif frame.ndim != 2:
            raise InvalidInput(f"unexpected decoded frame shape {frame.shape}")
        if self.raw is None:
            if self.color:
                shape: tuple[int, ...] = (frame.shape[0], self.nz, *frame.shape[1:])
            else:
                shape = (self.nz, *frame.shape)
            self.raw = np.empty(shape, dtype=frame.dtype)
        raw = self.raw
        expected = (raw.shape[0], *raw.shape[2:]) if self.color else raw.shape[1:]
        if frame.shape != expected:
            raise InvalidInput(
                f"slice shape {frame.shape} differs from the volume's {expected}",
                location=location,
            )
        if not np.can_cast(frame.dtype, raw.dtype, casting="safe"):
            self.raw = raw = raw.astype(np.promote_types(raw.dtype, frame.dtype))
        if self.color:
            raw[:, z] = frame
        else:
            raw[z] = frame


def _decode_into(
    ds: Dataset, ref: FileRef, slots: dict[int, int], target: _Target, palette: bool
) -> None:
    """Decode every frame of ``ds``; frame ``f`` goes to slice ``slots[f]``."""
    check_decodable(_transfer_syntax(ds))
    count = 0
    try:
        for f, frame in enumerate(iter_pixels(ds)):
            count += 1
            if f not in slots:
                continue
            if palette:
                frame = apply_color_lut(frame, ds)
            target.store(slots[f], frame, ref.display)
    except InvalidInput:
        raise
    except Exception as exc:
        raise _decode_error(exc, ref.display) from None
    if count < len(slots):
        raise InvalidInput(
            f"pixel data holds {count} frame(s), the header says {len(slots)}",
            location=ref.display,
        )


def decoded_bytes(instances: Sequence[InstanceInfo]) -> int:
    """What the volume of ``instances`` decodes to, in bytes, from their headers.

    Slices x rows x columns x samples x bytes per sample (palette colour: three 16-bit
    channels).
    """
    total = 0
    for inst in instances:
        samples = inst.samples_per_pixel or 1
        depth = max(((inst.bits_allocated or 16) + 7) // 8, 1)
        if inst.photometric == "PALETTE COLOR":
            samples, depth = 3, max(depth, 2)
        total += (inst.rows or 0) * (inst.columns or 0) * inst.number_of_frames * samples * depth
    return total


def load_volume(instances: Sequence[InstanceInfo], *, limits: ReadLimits | None = None) -> Volume:
    """Decode one consistent volume (from :func:`~atlas.ingest.geometry.split_series`).

    ``instances`` are single-frame instances of one volume (any order: they are sorted by
    position along the slice normal) or one multi-frame instance (frames ordered from its
    per-frame functional groups). Returns a :class:`~atlas.ingest.model.Volume` with pixels
    in real units (see the module docstring for value handling and dtypes).

    Raises :class:`atlas.errors.InvalidInput` — the caller quarantines — with reason
    ``"cannot decode transfer syntax <name>"`` when no installed decoder handles the
    transfer syntax, with a clear reason for corrupt pixel data or inconsistent slices, and
    (:class:`~atlas.ingest.safe_io.LimitExceeded`) before reading any pixel data when the
    volume would decode to more than ``limits`` allows (default :class:`ReadLimits`).
    """
    if not instances:
        raise InvalidInput("no instances to load")
    limits = limits or ReadLimits()
    limits.check_image(decoded_bytes(instances), "volume")
    reader = _Reader(limits)
    try:
        return _load(list(instances), reader)
    finally:
        reader.close()


def _load(instances: list[InstanceInfo], reader: _Reader) -> Volume:
    single = len(instances) == 1
    if single:
        ordered = instances
    else:
        if any(i.number_of_frames > 1 for i in instances):
            raise InvalidInput("a multi-frame object must be loaded as a volume of its own")
        shapes = {(i.rows, i.columns, i.samples_per_pixel) for i in instances}
        if len(shapes) > 1:
            raise InvalidInput(
                "slices of one volume differ in size; split the series first (split_series)"
            )
        ordered, _ = sort_by_position(instances)
    first = ordered[0]
    ds = reader.read(first.ref)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    palette = photometric == "PALETTE COLOR"
    color = palette or int(ds.get("SamplesPerPixel", 1) or 1) > 1
    modality = str(ds.get("Modality", "") or first.modality).strip().upper()

    multiframe = single and (n_frames > 1 or is_enhanced(ds))
    frames_of: list[tuple[str, int]]
    slots: list[dict[int, int]]
    maps: list[ValueMap] = []
    if multiframe:
        order, geometry = _multiframe_geometry(ds, n_frames)
        nz = n_frames
        slots = [{f: z for z, f in enumerate(order)}]
        frames_of = [(first.sop_instance_uid, f + 1) for f in order]
        if not color:
            maps = [value_map(ds, f) for f in order]
    else:
        nz = len(ordered)
        slots = [{0: z} for z in range(nz)]
        frames_of = [(i.sop_instance_uid, 1) for i in ordered]
        positions = [i.image_position for i in ordered]
        iop = first.image_orientation
        fallback = first_positive(ds.get("SliceThickness"), ds.get("SpacingBetweenSlices"))
        spacing = first.pixel_spacing
        if any(p is None for p in positions) or iop is None:
            if nz > 1:
                raise InvalidInput("cannot stack slices without patient position/orientation")
            geometry = stack_geometry(None, None, spacing, fallback, 1)
        else:
            geometry = stack_geometry(
                [p for p in positions if p is not None], iop, spacing, fallback, nz
            )

    target = _Target(nz=nz, color=color)
    header: Dataset | None = None
    for index, inst in enumerate(ordered):
        current = ds if index == 0 else reader.read(inst.ref)
        if not multiframe:
            if int(current.get("NumberOfFrames", 1) or 1) > 1:
                raise InvalidInput(
                    "a multi-frame object must be loaded as a volume of its own",
                    location=inst.ref.display,
                )
            if not color:
                maps.append(value_map(current, 0))
        _decode_into(current, inst.ref, slots[index], target, palette)
        _strip_pixels(current)
        if index == 0:
            header = current
    raw = target.raw
    assert raw is not None and header is not None

    if color:
        pixels = raw
        axes = "czyx"
    else:
        if photometric == "MONOCHROME1":
            invert_monochrome1(raw)
        pixels = rescale(raw, maps, modality)
        axes = "zyx"

    note = geometry.note
    for keyword, name in (
        ("PixelSpacing", "Pixel Spacing"),
        ("ImagerPixelSpacing", "Imager Pixel Spacing"),
    ):
        problem = vector_problem(header.get(keyword), 2, name, positive=True)
        if problem is not None:  # only images without patient geometry get this far
            ignored = f"{problem}: ignored (the image has no patient geometry)"
            note = f"{note}; {ignored}" if note else ignored
    for keyword, name in (
        ("SliceThickness", "Slice Thickness"),
        ("SpacingBetweenSlices", "Spacing Between Slices"),
    ):
        raw_value = header.get(keyword)
        if raw_value not in (None, "") and first_positive(raw_value) is None:
            ignored = f"invalid {name} (not a positive finite number) ignored"
            note = f"{note}; {ignored}" if note else ignored
    return Volume(
        pixels=pixels,
        axes=axes,
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
        regularly_spaced=geometry.regularly_spaced,
        slice_positions=geometry.positions,
        frames=frames_of,
        header=header,
        instances=list(ordered),
        spacing_note=note,
        slice_origins=geometry.slice_origins,
        slice_step=geometry.slice_step,
        frame_of_reference_uid=first.frame_of_reference_uid
        or (str(header.FrameOfReferenceUID) if header.get("FrameOfReferenceUID") else None),
    )
