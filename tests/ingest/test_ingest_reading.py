"""Reading DICOM like radiologists' tools do: discovery, series splitting, geometry, pixels.

Everything here uses real files: pydicom's bundled test files (``get_testdata_file`` with known
names only — never ``get_testdata_files(pattern)``, which tries to download), pydicom-data's
``data_store`` folder, and series built by copying ``CT_small.dcm`` with pydicom.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
data_store = pytest.importorskip("data_store")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import apply_color_lut, apply_modality_lut  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from atlas.errors import InvalidInput  # noqa: E402
from atlas.ingest.discover import Discovery, discover  # noqa: E402
from atlas.ingest.geometry import (  # noqa: E402
    slice_normal,
    sort_by_position,
    spacing_along_normal,
    split_series,
)
from atlas.ingest.model import FileRef, InstanceInfo, SeriesGroup, Volume  # noqa: E402
from atlas.ingest.pixels import load_volume  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA_STORE = Path(data_store.__file__).parent / "data"
TOL_MM = 1e-4


def pydicom_file(name: str) -> Path:
    """A pydicom test file by its known name (no download attempts)."""
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def store_file(name: str) -> Path:
    path = DATA_STORE / name
    assert path.is_file(), name
    return path


def sha256_tree(*roots: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def load_single(path: Path) -> tuple[Volume, Discovery]:
    """Discover one file and load its only volume."""
    found = discover([path])
    assert not found.quarantined, [q.reason for q in found.quarantined]
    assert len(found.series) == 1
    volumes, quarantined = split_series(found.series[0])
    assert not quarantined
    assert len(volumes) == 1
    return load_volume(volumes[0]), found


def header_floats(value: object) -> list[float]:
    return [float(v) for v in value]  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------
# real files, every transfer syntax


GRAYSCALE_FILES = [
    ("pydicom", "CT_small.dcm"),  # Explicit VR Little Endian, CT rescale -> HU
    ("pydicom", "MR_small.dcm"),
    ("pydicom", "MR_small_implicit.dcm"),  # Implicit VR Little Endian
    ("pydicom", "MR_small_bigendian.dcm"),  # Explicit VR Big Endian
    ("pydicom", "MR_small_RLE.dcm"),  # RLE Lossless
    ("pydicom", "MR_small_jpeg_ls_lossless.dcm"),  # JPEG-LS Lossless
    ("pydicom", "MR_small_jp2klossless.dcm"),  # JPEG 2000 Lossless
    ("pydicom", "JPEG2000.dcm"),  # JPEG 2000 (lossy syntax), signed
    ("pydicom", "JPGExtended.dcm"),  # JPEG Extended (12-bit)
    ("pydicom", "image_dfl.dcm"),  # Deflated Explicit VR Little Endian
    ("store", "JPEG-LL.dcm"),  # JPEG Lossless, first-order prediction
    ("store", "JPGLosslessP14SV1_1s_1f_8b.dcm"),  # JPEG Lossless 8-bit
    ("store", "693_J2KR.dcm"),  # CT, JPEG 2000 lossless
    ("store", "mlut_18.dcm"),  # Modality LUT Sequence
]


def _path(kind: str, name: str) -> Path:
    return pydicom_file(name) if kind == "pydicom" else store_file(name)


@pytest.mark.parametrize(("kind", "name"), GRAYSCALE_FILES, ids=[n for _, n in GRAYSCALE_FILES])
def test_grayscale_matches_pydicom(kind: str, name: str) -> None:
    path = _path(kind, name)
    vol, found = load_single(path)
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert vol.axes == "zyx"
    assert vol.pixels.shape == (1, int(ds.Rows), int(ds.Columns))
    np.testing.assert_array_equal(vol.pixels[0], expected)
    assert vol.pixels.dtype.kind in "iu"
    if ds.Modality == "CT":
        assert vol.pixels.dtype == np.int16
    assert vol.frames == [(str(ds.SOPInstanceUID), 1)]
    assert "PixelData" not in vol.header
    assert str(vol.header.SOPInstanceUID) == str(ds.SOPInstanceUID)
    if "ImagePositionPatient" in ds:
        np.testing.assert_allclose(vol.origin, header_floats(ds.ImagePositionPatient), atol=TOL_MM)
        iop = header_floats(ds.ImageOrientationPatient)
        np.testing.assert_allclose(vol.direction[:, 2], iop[:3], atol=1e-9)
        np.testing.assert_allclose(vol.direction[:, 1], iop[3:], atol=1e-9)
    if "PixelSpacing" in ds:
        np.testing.assert_allclose(vol.spacing[1:], header_floats(ds.PixelSpacing), atol=TOL_MM)
    if ds.get("SliceThickness"):
        assert math.isclose(vol.spacing[0], float(ds.SliceThickness), abs_tol=TOL_MM)
    assert found.files_seen == 1 and found.bytes_seen == path.stat().st_size


def test_ct_is_in_hounsfield_units() -> None:
    vol, _ = load_single(pydicom_file("CT_small.dcm"))
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024
    assert vol.pixels.dtype == np.int16
    np.testing.assert_array_equal(vol.pixels[0], ds.pixel_array.astype(np.int32) - 1024)
    np.testing.assert_allclose(vol.spacing, (5.0, 0.661468, 0.661468), atol=TOL_MM)
    assert vol.frame_of_reference_uid == str(ds.FrameOfReferenceUID)


def test_non_integral_rescale_gives_float32() -> None:
    path = store_file("MR2_UNCR.dcm")  # Rescale Slope 3.774114
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.pixels.dtype == np.float32
    np.testing.assert_allclose(vol.pixels[0], apply_modality_lut(ds.pixel_array, ds), rtol=1e-6)


COLOR_FILES = [
    ("store", "SC_rgb.dcm"),  # native RGB
    ("pydicom", "SC_rgb_rle.dcm"),  # RLE RGB
    ("store", "SC_ybr_full_uncompressed.dcm"),  # native YBR_FULL -> RGB
    ("pydicom", "SC_ybr_full_422_uncompressed.dcm"),  # native YBR_FULL_422 -> RGB
    ("pydicom", "SC_rgb_jpeg_dcmtk.dcm"),  # JPEG baseline, YBR_FULL
    ("pydicom", "SC_rgb_jpeg_gdcm.dcm"),  # JPEG lossless RGB
    ("store", "US1_J2KR.dcm"),  # JPEG 2000 lossless, YBR_RCT
    ("store", "US1_J2KI.dcm"),  # JPEG 2000, YBR_ICT
]


@pytest.mark.parametrize(("kind", "name"), COLOR_FILES, ids=[n for _, n in COLOR_FILES])
def test_color_is_czyx_rgb(kind: str, name: str) -> None:
    path = _path(kind, name)
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.axes == "czyx"
    assert vol.pixels.shape == (3, 1, int(ds.Rows), int(ds.Columns))
    np.testing.assert_array_equal(np.moveaxis(vol.pixels[:, 0], 0, -1), ds.pixel_array)
    # no patient geometry: the documented default, z -> S, y -> P, x -> L (columns z, y, x)
    assert vol.direction.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_ybr_is_converted_to_rgb() -> None:
    """The same picture stored as RGB and as YBR_FULL decodes to (nearly) the same RGB."""
    rgb, _ = load_single(store_file("SC_rgb.dcm"))
    ybr, _ = load_single(store_file("SC_ybr_full_uncompressed.dcm"))
    diff = np.abs(rgb.pixels.astype(int) - ybr.pixels.astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.0  # rounding of the colour transform
    raw = pydicom.dcmread(store_file("SC_ybr_full_uncompressed.dcm"))
    unconverted = np.moveaxis(pydicom.pixels.pixel_array(raw, raw=True), -1, 0)[:, None]
    assert np.abs(rgb.pixels.astype(int) - unconverted.astype(int)).max() > 50


def test_palette_color_is_mapped_to_rgb() -> None:
    path = store_file("OBXXXX1A.dcm")
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.axes == "czyx"
    expected = apply_color_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(np.moveaxis(vol.pixels[:, 0], 0, -1), expected)


def test_real_monochrome1_is_inverted_before_rescale() -> None:
    path = store_file("RG3_UNCR.dcm")  # CR, MONOCHROME1
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = ds.pixel_array.astype(np.int64)
    inverted = (int(stored.min()) + int(stored.max())) - stored
    np.testing.assert_array_equal(vol.pixels[0], apply_modality_lut(inverted, ds))
    # a 2-D object without patient geometry
    assert vol.direction.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert vol.origin == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------
# multi-frame objects


@pytest.mark.parametrize(
    "name",
    [
        "emri_small.dcm",
        "emri_small_RLE.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_big_endian.dcm",
    ],
)
def test_enhanced_mr_multiframe(name: str) -> None:
    path = store_file(name)
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.pixels.shape == (10, 64, 64)
    np.testing.assert_array_equal(vol.pixels, ds.pixel_array)
    assert [f for _, f in vol.frames] == list(range(1, 11))
    # this file has no plane positions: frames stay in file order, Spacing Between Slices
    assert math.isclose(vol.spacing[0], float(ds.SpacingBetweenSlices), abs_tol=TOL_MM)


def test_enhanced_ct_frames_ordered_along_normal() -> None:
    path = store_file("eCT_Supplemental.dcm")
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    per_frame = ds.PerFrameFunctionalGroupsSequence
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = header_floats(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    normal = slice_normal(iop)
    positions = [header_floats(f.PlanePositionSequence[0].ImagePositionPatient) for f in per_frame]
    order = sorted(range(len(positions)), key=lambda k: float(np.dot(positions[k], normal)))
    assert order == [1, 0]  # IOP row (-1,0,0): the normal points to -z, so frame 2 comes first
    assert vol.frames == [(str(ds.SOPInstanceUID), k + 1) for k in order]
    np.testing.assert_allclose(vol.origin, positions[order[0]], atol=TOL_MM)
    transform = shared.PixelValueTransformationSequence[0]
    expected = ds.pixel_array[order].astype(np.float64) * float(transform.RescaleSlope) + float(
        transform.RescaleIntercept
    )
    assert vol.pixels.dtype == np.int16
    np.testing.assert_array_equal(vol.pixels, expected)
    pixel_spacing = header_floats(shared.PixelMeasuresSequence[0].PixelSpacing)
    np.testing.assert_allclose(vol.spacing, (10.0, *pixel_spacing), atol=TOL_MM)
    np.testing.assert_allclose(vol.direction[:, 0], normal, atol=1e-12)
    np.testing.assert_allclose(vol.direction[:, 2], iop[:3], atol=1e-12)
    assert vol.regularly_spaced


def test_rtdose_grid_frame_offsets_and_scaling() -> None:
    path = pydicom_file("rtdose.dcm")
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.pixels.shape == (15, 10, 10)
    expected = ds.pixel_array * float(ds.DoseGridScaling)
    np.testing.assert_allclose(vol.pixels, expected, rtol=1e-6)
    assert math.isclose(vol.spacing[0], 5.0) and vol.regularly_spaced
    np.testing.assert_allclose(vol.origin, header_floats(ds.ImagePositionPatient), atol=TOL_MM)


def test_legacy_multiframe_color() -> None:
    path = pydicom_file("SC_rgb_rle_2frame.dcm")
    vol, _ = load_single(path)
    ds = pydicom.dcmread(path)
    assert vol.axes == "czyx" and vol.pixels.shape == (3, 2, 100, 100)
    np.testing.assert_array_equal(np.moveaxis(vol.pixels, 0, -1), ds.pixel_array)


# ----------------------------------------------------------------------------------------
# synthetic series from CT_small.dcm

ROW = (1.0, 0.0, 0.0)
COL = (0.0, 1.0, 0.0)


def _ds_text(value: float) -> str:
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    assert len(text) <= 16
    return text


class CTSeries:
    """Writes CT slices copied from CT_small.dcm with chosen geometry."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.base = pydicom.dcmread(pydicom_file("CT_small.dcm"))
        self.stored = self.base.pixel_array.astype(np.int16)
        self.series_uid = generate_uid()
        self.count = 0

    def write(
        self,
        position: Sequence[float],
        *,
        instance: int,
        offset: int = 0,
        iop: Sequence[float] = (*ROW, *COL),
        size: int | None = None,
        acquisition: int | None = None,
        photometric: str | None = None,
        series_uid: str | None = None,
    ) -> Path:
        ds = copy.deepcopy(self.base)
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SeriesInstanceUID = series_uid or self.series_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds_text(v) for v in position]
        ds.ImageOrientationPatient = [_ds_text(v) for v in iop]
        if acquisition is not None:
            ds.AcquisitionNumber = acquisition
        if photometric is not None:
            ds.PhotometricInterpretation = photometric
        pixels = self.stored + np.int16(offset)
        if size is not None:
            pixels = np.ascontiguousarray(pixels[:size, :size])
            ds.Rows = ds.Columns = size
        ds.PixelData = pixels.tobytes()
        self.count += 1
        path = self.folder / f"slice{self.count:03d}.dcm"
        ds.save_as(path)
        return path

    def hu(self, offset: int = 0) -> np.ndarray:
        return self.stored.astype(np.int32) + offset - 1024


def _one_series(found: Discovery) -> SeriesGroup:
    assert len(found.series) == 1, found
    return found.series[0]


def test_slices_ordered_by_position_not_instance_number(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    z = [10.0, 12.5, 15.0, 17.5, 20.0, 22.5]
    instance_numbers = [4, 1, 6, 2, 5, 3]  # shuffled against the positions
    written = [
        (k, series.write((-100.0, -120.0, z[k]), instance=instance_numbers[k], offset=10 * k))
        for k in (3, 0, 5, 1, 4, 2)
    ]
    assert len(written) == 6
    group = _one_series(discover([tmp_path / "ct"]))
    volumes, quarantined = split_series(group)
    assert not quarantined and len(volumes) == 1
    vol = load_volume(volumes[0])
    assert vol.pixels.shape == (6, 128, 128) and vol.pixels.dtype == np.int16
    for k in range(6):
        np.testing.assert_array_equal(vol.pixels[k], series.hu(10 * k))
    assert [i.instance_number for i in vol.instances] == instance_numbers
    np.testing.assert_allclose(vol.slice_positions, z, atol=TOL_MM)
    np.testing.assert_allclose(vol.origin, (-100.0, -120.0, 10.0), atol=TOL_MM)
    assert math.isclose(vol.spacing[0], 2.5, abs_tol=TOL_MM)
    assert vol.regularly_spaced and vol.spacing_note is None
    # columns: z axis = normal (0,0,1), y axis = column cosines, x axis = row cosines
    assert vol.direction.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_missing_slice_is_flagged(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    for k, z in enumerate([0.0, 3.0, 6.0, 12.0, 15.0]):  # 9.0 is missing
        series.write((0.0, 0.0, z), instance=k + 1)
    volumes, _ = split_series(_one_series(discover([tmp_path])))
    vol = load_volume(volumes[0])
    assert not vol.regularly_spaced
    assert vol.spacing_note is not None and "missing" in vol.spacing_note
    assert math.isclose(vol.spacing[0], 3.0, abs_tol=TOL_MM)


def test_two_orientations_split_in_two_volumes(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    for k in range(3):
        series.write((0.0, 0.0, 2.0 * k), instance=k + 1)
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    for k in range(4):
        series.write((3.0 * k, 0.0, 0.0), instance=10 + k, iop=sagittal)
    volumes, quarantined = split_series(_one_series(discover([tmp_path])))
    assert not quarantined
    assert sorted(len(v) for v in volumes) == [3, 4]
    loaded = {len(v): load_volume(v) for v in volumes}
    np.testing.assert_allclose(loaded[4].direction[:, 0], slice_normal(sagittal), atol=1e-12)
    assert math.isclose(loaded[4].spacing[0], 3.0, abs_tol=TOL_MM)
    assert math.isclose(loaded[3].spacing[0], 2.0, abs_tol=TOL_MM)


def test_two_sizes_split_in_two_volumes(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    for k in range(3):
        series.write((0.0, 0.0, 2.0 * k), instance=k + 1)
    for k in range(2):
        series.write((0.0, 0.0, 2.0 * k), instance=10 + k, size=64)
    volumes, quarantined = split_series(_one_series(discover([tmp_path])))
    assert not quarantined
    shapes = sorted(load_volume(v).pixels.shape for v in volumes)
    assert shapes == [(2, 64, 64), (3, 128, 128)]


def test_oblique_direction_cosines_kept(tmp_path: Path) -> None:
    a, b = math.radians(30), math.radians(20)
    row = (math.cos(a), math.sin(a), 0.0)
    col = (-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b))
    iop = tuple(round(v, 8) for v in (*row, *col))
    normal = slice_normal(iop)
    origin = np.array([-50.0, 20.0, 30.0])
    series = CTSeries(tmp_path / "ct")
    for k in (2, 0, 3, 1):
        series.write(tuple(origin + 1.5 * k * normal), instance=k + 1, iop=iop, offset=k)
    volumes, _ = split_series(_one_series(discover([tmp_path])))
    vol = load_volume(volumes[0])
    np.testing.assert_allclose(vol.direction[:, 2], iop[:3], atol=1e-12)
    np.testing.assert_allclose(vol.direction[:, 1], iop[3:], atol=1e-12)
    np.testing.assert_allclose(vol.direction[:, 0], normal, atol=1e-12)
    np.testing.assert_allclose(vol.origin, origin, atol=TOL_MM)
    assert math.isclose(vol.spacing[0], 1.5, abs_tol=TOL_MM) and vol.regularly_spaced
    for k in range(4):
        np.testing.assert_array_equal(vol.pixels[k], series.hu(k))


def test_monochrome1_inverted_in_stored_units(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    series.write((0.0, 0.0, 0.0), instance=1, photometric="MONOCHROME1")
    series.write((0.0, 0.0, 5.0), instance=2, photometric="MONOCHROME1", offset=50)
    volumes, _ = split_series(_one_series(discover([tmp_path])))
    vol = load_volume(volumes[0])
    stored = np.stack([series.stored, series.stored + 50]).astype(np.int32)
    expected = (stored.min() + stored.max()) - stored - 1024
    np.testing.assert_array_equal(vol.pixels, expected)
    assert vol.pixels.dtype == np.int16


def test_acquisitions_split_when_positions_collide(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    for acq in (1, 2):
        for k in range(3):
            series.write((0.0, 0.0, 2.0 * k), instance=10 * acq + k, acquisition=acq)
    volumes, quarantined = split_series(_one_series(discover([tmp_path])))
    assert not quarantined and len(volumes) == 2
    assert [{i.acquisition_number for i in v} for v in volumes] == [{1}, {2}]


def test_unsupported_transfer_syntax_raises(tmp_path: Path) -> None:
    base = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    cases = {
        "mpeg2.dcm": ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
        "unknown.dcm": ("1.2.826.0.1.3680043.10.1.999", "1.2.826.0.1.3680043.10.1.999"),
    }
    for name, (uid, _) in cases.items():
        ds = copy.deepcopy(base)
        ds.file_meta.TransferSyntaxUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PixelData = encapsulate([base.PixelData])
        ds["PixelData"].VR = "OB"
        ds.save_as(tmp_path / name)
    found = discover([tmp_path])
    assert not found.quarantined  # headers are fine; decoding is what fails
    by_name = {Path(i.ref.path).name: i for i in found.series[0].instances}
    for name, (_, label) in cases.items():
        with pytest.raises(InvalidInput, match="cannot decode transfer syntax") as err:
            load_volume([by_name[name]])
        assert label in str(err.value)


# ----------------------------------------------------------------------------------------
# discovery: directories, zip archives, DICOMDIR, damaged inputs


IDENTIFYING = ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID")


def _identifiers(*paths: Path) -> set[str]:
    values: set[str] = set()
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        for keyword in (*IDENTIFYING, "SOPInstanceUID", "StudyDate"):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 4:
                values.add(value)
    return values


def _assert_reasons_clean(found: Discovery, identifiers: set[str]) -> None:
    for q in found.quarantined:
        assert q.reason
        for value in identifiers:
            assert value not in q.reason, q.reason


def test_discover_directory(tmp_path: Path) -> None:
    src = tmp_path / "inputs"
    series = CTSeries(src / "ct")
    for k in range(4):
        series.write((0.0, 0.0, 2.0 * k), instance=k + 1)
    shutil.copy(pydicom_file("MR_small.dcm"), src / "mr.dcm")
    shutil.copy(pydicom_file("rtstruct.dcm"), src / "rtstruct.dcm")  # no preamble / file meta
    shutil.copy(pydicom_file("liver_1frame.dcm"), src / "seg.dcm")
    shutil.copy(pydicom_file("rtplan.dcm"), src / "plan.dcm")  # no pixel data
    (src / "notes.txt").write_text("referral letter, not an image\n")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # skipped silently
    whole = pydicom_file("CT_small.dcm").read_bytes()
    (src / "half.dcm").write_bytes(whole[: len(whole) // 2])
    (src / "header_cut.dcm").write_bytes(whole[:1000])
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), src / "mask.nii.gz")

    before = sha256_tree(src)
    found = discover([src])
    assert sha256_tree(src) == before

    assert len(found.series) == 2
    sizes = sorted(len(s.instances) for s in found.series)
    assert sizes == [1, 4]
    assert sorted(i.modality for i in found.segmentations) == ["RTSTRUCT", "SEG"]
    assert [Path(r.path).name for r in found.nifti] == ["mask.nii.gz"]
    reasons = {Path(q.ref.path).name: q.reason for q in found.quarantined}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["plan.dcm"] == "no pixel data"
    assert reasons["half.dcm"].startswith("truncated DICOM file")
    assert reasons["header_cut.dcm"].startswith("truncated DICOM file")
    assert set(reasons) == {"notes.txt", "plan.dcm", "half.dcm", "header_cut.dcm"}
    assert found.files_seen == 4 + 4 + 1 + 3  # CT, MR/RTSTRUCT/SEG/plan, NIfTI, text+2 cut
    assert found.bytes_seen == sum(
        p.stat().st_size for p in src.rglob("*") if p.is_file() and p.name != ".DS_Store"
    )
    _assert_reasons_clean(
        found, _identifiers(pydicom_file("CT_small.dcm"), pydicom_file("rtplan.dcm"))
    )
    ct = next(s for s in found.series if s.modality == "CT")
    volumes, _ = split_series(ct)
    assert load_volume(volumes[0]).pixels.shape == (4, 128, 128)
    assert sha256_tree(src) == before


def test_discover_zip_with_bad_members(tmp_path: Path) -> None:
    series = CTSeries(tmp_path / "ct")
    slices = [series.write((0.0, 0.0, 2.0 * k), instance=k + 1, offset=k) for k in range(3)]
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in slices:
            zf.write(p, f"study/ct/{p.name}")
        zf.write(pydicom_file("MR_small.dcm"), "study/mr/mr.dcm")
        zf.writestr("study/readme.txt", "exported by a PACS\n")
        zf.writestr("study/broken.dcm", pydicom_file("MR_small.dcm").read_bytes())
    # corrupt the stored bytes of one member: its CRC-32 no longer matches
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("study/broken.dcm")
    data_start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(4000, 4016):
        raw[data_start + k] ^= 0xFF
    archive.write_bytes(bytes(raw))

    before = sha256_tree(archive)
    found = discover([archive])
    assert sha256_tree(archive) == before
    reasons = {q.ref.member: q.reason for q in found.quarantined}
    assert reasons["study/readme.txt"] == "not a DICOM file"
    assert reasons["study/broken.dcm"].startswith("corrupt zip archive member")
    assert len(reasons) == 2
    assert sorted(len(s.instances) for s in found.series) == [1, 3]
    assert found.files_seen == 6
    _assert_reasons_clean(found, _identifiers(pydicom_file("MR_small.dcm"), slices[0]))
    ct = next(s for s in found.series if s.modality == "CT")
    assert all(i.ref.path == str(archive) and i.ref.member for i in ct.instances)
    volumes, _ = split_series(ct)
    vol = load_volume(volumes[0])
    for k in range(3):
        np.testing.assert_array_equal(vol.pixels[k], series.hu(k))
    mr = next(s for s in found.series if s.modality == "MR")
    mr_vol = load_volume(mr.instances)
    np.testing.assert_array_equal(
        mr_vol.pixels[0], pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array
    )


def test_unreadable_zip_archive_is_quarantined(tmp_path: Path) -> None:
    bad = tmp_path / "export.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 200)  # a zip signature and nothing else
    found = discover([tmp_path])
    assert [(Path(q.ref.path).name, q.ref.member) for q in found.quarantined] == [
        ("export.zip", None)
    ]
    assert found.quarantined[0].reason.startswith("not a readable zip archive")


def _dicomdir_references(dicomdir: Path) -> list[Path]:
    ds = pydicom.dcmread(dicomdir)
    refs = []
    for record in ds.DirectoryRecordSequence:
        file_id = record.get("ReferencedFileID")
        if file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            refs.append(dicomdir.parent.joinpath(*parts))
    return refs


def test_discover_dicomdir() -> None:
    dicomdir = pydicom_file("DICOMDIR")
    referenced = _dicomdir_references(dicomdir)
    assert len(referenced) > 10
    found = discover([dicomdir])
    assert not found.quarantined
    assert found.files_seen == 1 + len(referenced)
    discovered = sorted(i.ref.path for s in found.series for i in s.instances)
    assert discovered == sorted(str(p) for p in referenced)
    expected_series = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in referenced
    }
    assert {s.series_uid for s in found.series} == expected_series
    # one CT series of the DICOMDIR: five axial slices 2.5 mm apart, stored top-down
    ct5 = next(s for s in found.series if len(s.instances) == 5)
    volumes, quarantined = split_series(ct5)
    assert not quarantined and len(volumes) == 1
    vol = load_volume(volumes[0])
    positions = [
        header_floats(pydicom.dcmread(i.ref.path, stop_before_pixels=True).ImagePositionPatient)
        for i in ct5.instances
    ]
    lowest = min(positions, key=lambda p: p[2])
    np.testing.assert_allclose(vol.origin, lowest, atol=TOL_MM)
    assert math.isclose(vol.spacing[0], 2.5, abs_tol=TOL_MM) and vol.regularly_spaced
    for z, inst in enumerate(vol.instances):
        ds = pydicom.dcmread(inst.ref.path)
        np.testing.assert_array_equal(vol.pixels[z], apply_modality_lut(ds.pixel_array, ds))


def test_dicomdir_with_missing_file(tmp_path: Path) -> None:
    source = pydicom_file("DICOMDIR").parent
    copy_root = tmp_path / "media"
    shutil.copytree(source, copy_root, ignore=shutil.ignore_patterns("TINY_ALPHA", "DICOMDIR-*"))
    referenced = _dicomdir_references(copy_root / "DICOMDIR")
    referenced[0].unlink()
    found = discover([copy_root / "DICOMDIR"])
    assert [q.reason for q in found.quarantined] == ["file referenced by DICOMDIR is missing"]
    assert sum(len(s.instances) for s in found.series) == len(referenced) - 1
    # walking the folder instead finds the same images once each (the DICOMDIR is an index)
    walked = discover([copy_root])
    assert sum(len(s.instances) for s in walked.series) == len(referenced) - 1


def test_missing_source_raises(tmp_path: Path) -> None:
    from atlas.errors import NotFound

    with pytest.raises(NotFound):
        discover([tmp_path / "nope"])


# ----------------------------------------------------------------------------------------
# geometry helpers on header data alone


def _info(
    z: float,
    *,
    instance: int,
    iop: Sequence[float] = (*ROW, *COL),
    rows: int = 8,
    acquisition: int | None = None,
) -> InstanceInfo:
    return InstanceInfo(
        ref=FileRef(f"/virtual/{instance}.dcm"),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"2.25.{instance}",
        study_uid="2.25.1",
        series_uid="2.25.2",
        modality="CT",
        patient_id="",
        rows=rows,
        columns=rows,
        image_orientation=tuple(iop),
        image_position=(0.0, 0.0, z),
        pixel_spacing=(0.5, 0.5),
        acquisition_number=acquisition,
        instance_number=instance,
    )


def test_spacing_along_normal() -> None:
    assert spacing_along_normal([0.0, 1.0, 2.0, 3.0]) == (1.0, True, None)
    spacing, regular, note = spacing_along_normal([0.0, 1.0, 2.0, 4.0, 5.0])
    assert spacing == 1.0 and not regular and note is not None and "1 missing" in note
    spacing, regular, note = spacing_along_normal([0.0, 1.0, 2.3, 3.0, 4.0])
    assert not regular and note is not None and "irregular" in note
    assert spacing_along_normal([5.0]) == (0.0, True, None)
    # within the 1 % tolerance
    assert spacing_along_normal([0.0, 1.0, 2.005, 3.0])[1]


def test_sort_by_position_uses_the_normal() -> None:
    # IOP with row (-1, 0, 0): the normal points to -z, so the highest z comes first
    iop = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    items = [_info(z, instance=k, iop=iop) for k, z in enumerate([0.0, 10.0, 5.0], start=1)]
    ordered, dists = sort_by_position(items)
    assert [i.image_position[2] for i in ordered if i.image_position] == [10.0, 5.0, 0.0]
    assert dists == [-10.0, -5.0, 0.0]


def test_split_repeated_positions() -> None:
    # every position twice, same acquisition: two volumes (e.g. two echoes)
    items = [_info(float(k % 3), instance=k) for k in range(6)]
    volumes, quarantined = split_series(SeriesGroup("2.25.1", "2.25.2", "CT", items))
    assert not quarantined and [len(v) for v in volumes] == [3, 3]
    # one stray duplicate: kept once, the other copy quarantined
    items = [_info(float(k), instance=k) for k in range(4)] + [_info(2.0, instance=9)]
    volumes, quarantined = split_series(SeriesGroup("2.25.1", "2.25.2", "CT", items))
    assert [len(v) for v in volumes] == [4]
    assert len(quarantined) == 1 and "duplicate slice position" in quarantined[0].reason
    assert quarantined[0].ref.path == "/virtual/9.dcm"
    # objects without pixel data never reach a volume
    items = [_info(0.0, instance=1)]
    items[0].has_pixel_data = False
    volumes, quarantined = split_series(SeriesGroup("2.25.1", "2.25.2", "CT", items))
    assert volumes == [] and quarantined[0].reason == "no pixel data"
