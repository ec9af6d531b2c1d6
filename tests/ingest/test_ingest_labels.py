"""Labels from SEG, RTSTRUCT and NIfTI on an image's voxel grid; the synthetic study generator.

Volumes are built here straight from the CT files with pydicom (sorted by position), so these
tests do not depend on the pixel loader. RTSTRUCT rasterisation is checked against an
independent implementation (matplotlib's ``Path.contains_points`` over voxel centres).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
nib = pytest.importorskip("nibabel")
pytest.importorskip("skimage")

from matplotlib.path import Path as MplPath  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from atlas.errors import InvalidInput  # noqa: E402
from atlas.ingest.labels import (  # noqa: E402
    nifti_to_labels,
    referenced_instance_uids,
    referenced_series_uids,
    rtstruct_to_labels,
    seg_to_labels,
)
from atlas.ingest.model import Volume  # noqa: E402
from atlas.testing.synthetic import (  # noqa: E402
    SyntheticStudy,
    make_study,
    supported_transfer_syntaxes,
)

SHAPE = (24, 96, 96)
SPACING = (2.5, 1.1, 1.1)


# --------------------------------------------------------------------------------------------
# helpers


def volume_from_files(files: list[Path]) -> Volume:
    """A Volume from single-frame CT files, sorted by position along the slice normal."""
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)

    def pos(d: Any) -> float:
        return float(np.dot(np.asarray(d.ImagePositionPatient, dtype=float), normal))

    dss.sort(key=pos)
    positions = [pos(d) for d in dss]
    pixels = np.stack(
        [
            d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            for d in dss
        ]
    )
    ps = [float(v) for v in dss[0].PixelSpacing]
    ipp0 = [float(v) for v in dss[0].ImagePositionPatient]
    dz = float(np.mean(np.diff(positions))) if len(positions) > 1 else 1.0
    return Volume(
        pixels=pixels,
        axes="zyx",
        spacing=(dz, ps[0], ps[1]),
        origin=(ipp0[0], ipp0[1], ipp0[2]),
        direction=np.stack([normal, col, row], axis=1),
        regularly_spaced=True,
        slice_positions=positions,
        frames=[(str(d.SOPInstanceUID), 1) for d in dss],
        header=None,
        instances=[],
        frame_of_reference_uid=str(dss[0].FrameOfReferenceUID),
    )


def volume_from_geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: np.ndarray,
    frame_of_reference_uid: str | None,
) -> Volume:
    return Volume(
        pixels=np.zeros(shape, dtype=np.int16),
        axes="zyx",
        spacing=spacing,
        origin=origin,
        direction=np.asarray(direction, dtype=float),
        regularly_spaced=True,
        slice_positions=[float(k * spacing[0]) for k in range(shape[0])],
        frames=[],
        header=None,
        instances=[],
        frame_of_reference_uid=frame_of_reference_uid,
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def independent_rasterise(rt: Any, volume: Volume) -> tuple[np.ndarray, list[int]]:
    """Even-odd fill of each ROI's closed planar contours (matplotlib, voxel centres)."""
    nz, ny, nx = volume.pixels.shape
    m = np.asarray(volume.direction) * np.asarray(volume.spacing)[None, :]
    origin = np.asarray(volume.origin)
    yy, xx = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    by_roi: dict[int, list[Any]] = {}
    for item in rt.ROIContourSequence:
        closed = [
            c for c in item.get("ContourSequence", []) if c.ContourGeometricType == "CLOSED_PLANAR"
        ]
        if closed:
            by_roi[int(item.ReferencedROINumber)] = closed
    numbers = sorted(by_roi)
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    for value, n in enumerate(numbers, start=1):
        roi = np.zeros((nz, ny, nx), dtype=bool)
        for c in by_roi[n]:
            pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            zyx = np.linalg.solve(m, (pts - origin).T).T
            k = round(float(zyx[:, 0].mean()))
            inside = MplPath(zyx[:, [2, 1]]).contains_points(centres).reshape(ny, nx)
            roi[k] ^= inside
        out[roi] = value
    return out, numbers


def resample_nearest(arr: np.ndarray, src_affine: np.ndarray, dst: Volume) -> np.ndarray:
    """Copy ``arr`` (voxel->LPS ``src_affine``) onto ``dst``'s grid, which must coincide."""
    shape = dst.pixels.shape
    a = np.eye(4)
    a[:3, :3] = np.asarray(dst.direction) * np.asarray(dst.spacing)[None, :]
    a[:3, 3] = dst.origin
    m = np.linalg.solve(src_affine, a)
    idx = np.indices(shape).reshape(3, -1).astype(float)
    src = np.rint(m[:3, :3] @ idx + m[:3, 3:4]).astype(int)
    return arr[src[0], src[1], src[2]].reshape(shape)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return make_study(
        tmp_path_factory.mktemp("axial"), shape=SHAPE, spacing=SPACING, seed=3, keep_hu=True
    )


@pytest.fixture(scope="module")
def volume(study: SyntheticStudy) -> Volume:
    return volume_from_files(study.ct_files)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return make_study(
        tmp_path_factory.mktemp("oblique"), shape=SHAPE, spacing=SPACING, seed=5, oblique=True
    )


@pytest.fixture(scope="module")
def oblique_volume(oblique: SyntheticStudy) -> Volume:
    return volume_from_files(oblique.ct_files)


def assert_no_canary(exc: BaseException, study: SyntheticStudy) -> None:
    text = str(exc)
    for canary in study.canaries:
        assert canary not in text


# --------------------------------------------------------------------------------------------
# the generator


def test_study_files_and_geometry(study: SyntheticStudy, volume: Volume) -> None:
    assert study.truth_labels.shape == SHAPE
    assert set(np.unique(study.truth_labels)) == {0, 1, 2}
    # volume built from the files (sorted by position) matches the study's geometry
    np.testing.assert_allclose(volume.origin, study.origin, atol=1e-4)
    np.testing.assert_allclose(volume.spacing, study.spacing, atol=1e-4)
    np.testing.assert_allclose(volume.direction, study.direction, atol=1e-6)
    assert volume.frames == [(uid, 1) for uid in study.sop_instance_uids]
    # ct_files are in sorted-slice order, and HU round-trip exactly
    assert study.hu is not None
    np.testing.assert_array_equal(volume.pixels, study.hu.astype(np.float32))
    for k, f in enumerate(study.ct_files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SOPInstanceUID == study.sop_instance_uids[k]
        assert ds.SeriesInstanceUID == study.series_uid
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.FrameOfReferenceUID == study.frame_of_reference_uid
        assert ds.PatientID == study.patient_id
        assert int(ds.InstanceNumber) == study.instance_numbers[k]
        expected = np.asarray(study.origin) + study.direction[:, 0] * study.spacing[0] * k
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), expected, atol=1e-4)
    numbers = study.instance_numbers
    assert sorted(numbers) == list(range(1, SHAPE[0] + 1))
    assert numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True)
    names = sorted(study.ct_files)
    assert names != study.ct_files  # file names follow neither order
    # the phantom's anatomy is in place: liver and tumour present, tumour inside liver region
    assert (study.truth_labels == 2).sum() > 50
    assert (study.truth_labels == 1).sum() > 500


def test_canaries_are_in_the_written_bytes(study: SyntheticStudy) -> None:
    files = [*study.ct_files, study.seg_file, study.rtstruct_file]
    blobs = [Path(f).read_bytes() for f in files if f is not None]
    assert len(study.canaries) > 60
    everything = b"\0".join(blobs)
    missing = [c for c in study.canaries if c.encode() not in everything]
    assert not missing, missing
    # the core identifiers are in every file (CT, SEG and RTSTRUCT)
    core = [study.patient_id, study.study_uid, *[c for c in study.canaries if "NAME-" in c][:1]]
    for blob in blobs:
        for c in core:
            assert c.encode() in blob
    # private block with a private creator
    ds = pydicom.dcmread(study.ct_files[0], stop_before_pixels=True)
    block = ds.private_block(0x0009, "ATLAS SYNTHETIC")
    assert block[0x01].value in study.canaries


def test_study_is_reproducible(tmp_path: Path) -> None:
    a = make_study(tmp_path / "a", shape=(4, 40, 40), seed=11, with_nifti=False)
    b = make_study(tmp_path / "b", shape=(4, 40, 40), seed=11, with_nifti=False)
    for fa, fb in zip(
        [*a.ct_files, a.seg_file, a.rtstruct_file],
        [*b.ct_files, b.seg_file, b.rtstruct_file],
        strict=True,
    ):
        assert fa is not None and fb is not None
        assert fa.name == fb.name
        assert fa.read_bytes() == fb.read_bytes()
    c = make_study(tmp_path / "c", shape=(4, 40, 40), seed=12, with_nifti=False)
    assert c.study_uid != a.study_uid and c.patient_id != a.patient_id


@pytest.mark.parametrize(
    "ts",
    [
        pytest.param(ts, id=pydicom.uid.UID(ts).keyword or ts)
        for ts in [
            "1.2.840.10008.1.2",  # implicit VR little endian
            "1.2.840.10008.1.2.1.99",  # deflated
            "1.2.840.10008.1.2.5",  # RLE lossless
            "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
            "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        ]
    ],
)
@pytest.mark.parametrize("signed", [False, True])
def test_transfer_syntaxes_round_trip(tmp_path: Path, ts: str, signed: bool) -> None:
    if ts not in supported_transfer_syntaxes():
        with pytest.raises(InvalidInput):
            make_study(tmp_path, shape=(3, 32, 32), transfer_syntax=ts)
        pytest.skip(f"no encoder for {ts} here")
    s = make_study(
        tmp_path,
        shape=(3, 48, 48),
        transfer_syntax=ts,
        signed=signed,
        keep_hu=True,
        with_seg=False,
        with_rtstruct=False,
        with_nifti=False,
    )
    assert s.hu is not None
    for k, f in enumerate(s.ct_files):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ts
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, s.hu[k])


def test_lossy_transfer_syntax_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="round-trip"):
        make_study(tmp_path, shape=(3, 32, 32), transfer_syntax="1.2.840.10008.1.2.4.50")


# --------------------------------------------------------------------------------------------
# SEG


def test_seg_equals_truth(study: SyntheticStudy, volume: Volume) -> None:
    assert study.seg_file is not None
    labels = seg_to_labels(study.seg_file, volume)
    assert labels.source == "SEG"
    assert labels.mask.shape == SHAPE
    np.testing.assert_array_equal(labels.mask, study.truth_labels)
    assert labels.names == {1: "liver", 2: "liver tumour"}
    assert labels.codes[1] == {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}
    assert labels.codes[2]["value"] == "108369006"
    r, g, b, a = labels.colors[1]
    assert abs(r - 165) <= 2 and abs(g - 80) <= 2 and abs(b - 40) <= 2 and a == 255
    assert labels.source_uid == study.seg_uid
    assert referenced_series_uids(study.seg_file) == {study.series_uid}
    refs = referenced_instance_uids(study.seg_file)
    assert refs and refs <= set(study.sop_instance_uids)


def test_seg_later_segment_wins(study: SyntheticStudy, volume: Volume) -> None:
    ds = pydicom.dcmread(study.seg_file)
    # relabel every tumour frame as a liver frame on the same slice: liver must then cover
    # the tumour, and swapping numbers back restores it (overlap resolution is by number)
    frames = ds.PerFrameFunctionalGroupsSequence
    for item in frames:
        ident = item.SegmentIdentificationSequence[0]
        ident.ReferencedSegmentNumber = 3 - int(ident.ReferencedSegmentNumber)
    ds.SegmentSequence[0].SegmentNumber, ds.SegmentSequence[1].SegmentNumber = 2, 1
    ds.SegmentSequence = [ds.SegmentSequence[1], ds.SegmentSequence[0]]
    labels = seg_to_labels(ds, volume)
    expected = np.where(study.truth_labels == 1, 2, np.where(study.truth_labels == 2, 1, 0))
    np.testing.assert_array_equal(labels.mask, expected)
    assert labels.names == {1: "liver tumour", 2: "liver"}


def test_seg_sparse_irregular_volume(study: SyntheticStudy, volume: Volume) -> None:
    """Frames are matched by position: a volume with slices missing still gets its slices."""
    keep = [k for k in range(SHAPE[0]) if k % 5 != 2]
    sub = copy.copy(volume)
    sub.pixels = volume.pixels[keep]
    sub.slice_positions = [volume.slice_positions[k] for k in keep]
    sub.frames = [volume.frames[k] for k in keep]
    sub.regularly_spaced = False
    ds = pydicom.dcmread(study.seg_file)
    # drop the SEG frames of the missing slices too (else they lie between slices)
    dropped = {k for k in range(SHAPE[0]) if k % 5 == 2}
    grid_pos = np.asarray(volume.slice_positions)
    per_frame = list(ds.PerFrameFunctionalGroupsSequence)
    normal = volume.direction[:, 0]
    keep_frames = []
    for i, item in enumerate(per_frame):
        p = float(np.dot(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient), normal))
        k = int(np.argmin(np.abs(grid_pos - p)))
        if k not in dropped:
            keep_frames.append(i)
    with pytest.raises(InvalidInput, match="slice"):
        seg_to_labels(ds, sub)
    pixels = hd.seg.Segmentation.from_dataset(copy.deepcopy(ds)).pixel_array
    ds.PerFrameFunctionalGroupsSequence = [per_frame[i] for i in keep_frames]
    ds.NumberOfFrames = len(keep_frames)
    ds.PixelData = pydicom.pixels.utils.pack_bits(pixels[keep_frames])
    labels = seg_to_labels(ds, sub)
    np.testing.assert_array_equal(labels.mask, study.truth_labels[keep])


def test_seg_geometry_mismatch(study: SyntheticStudy, volume: Volume, tmp_path: Path) -> None:
    base = pydicom.dcmread(study.seg_file)

    other_for = copy.deepcopy(base)
    other_for.FrameOfReferenceUID = "2.25.1234"
    with pytest.raises(InvalidInput, match="frame of reference") as e1:
        seg_to_labels(other_for, volume)

    shifted = copy.deepcopy(base)
    for item in shifted.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0]
        ipp = [float(v) for v in pos.ImagePositionPatient]
        pos.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + SPACING[0] / 2]
    with pytest.raises(InvalidInput, match="slice grid") as e2:
        seg_to_labels(shifted, volume)

    inplane = copy.deepcopy(base)
    for item in inplane.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0]
        ipp = [float(v) for v in pos.ImagePositionPatient]
        pos.ImagePositionPatient = [ipp[0] + 5.0, ipp[1], ipp[2]]
    with pytest.raises(InvalidInput, match="in-plane") as e3:
        seg_to_labels(inplane, volume)

    spacing = copy.deepcopy(base)
    spacing.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [0.9, 0.9]
    with pytest.raises(InvalidInput, match="pixel spacing") as e4:
        seg_to_labels(spacing, volume)

    # a SEG of another study on another grid
    other = make_study(tmp_path, shape=(6, 64, 64), seed=9, with_rtstruct=False, with_nifti=False)
    with pytest.raises(InvalidInput, match="does not match the image") as e5:
        seg_to_labels(other.seg_file, volume)
    # the same SEG without the frame-of-reference check still fails on rows/columns
    vol_no_for = copy.copy(volume)
    vol_no_for.frame_of_reference_uid = None
    with pytest.raises(InvalidInput, match="64x64") as e6:
        seg_to_labels(other.seg_file, vol_no_for)

    for e in (e1, e2, e3, e4, e5, e6):
        assert_no_canary(e.value, study)
        assert_no_canary(e.value, other)

    with pytest.raises(InvalidInput, match="Segmentation"):
        seg_to_labels(study.rtstruct_file, volume)


def test_seg_oblique(oblique: SyntheticStudy, oblique_volume: Volume) -> None:
    assert oblique.seg_file is not None
    labels = seg_to_labels(oblique.seg_file, oblique_volume)
    np.testing.assert_array_equal(labels.mask, oblique.truth_labels)


# --------------------------------------------------------------------------------------------
# real SEG files (pydicom / pydicom-data)


def pydicom_test_file(name: str) -> Path:
    """A pydicom test file by name (never the pattern lookup, which tries to download)."""
    p = get_testdata_file(name)
    if not isinstance(p, str) or not Path(p).exists():
        pytest.skip(f"pydicom test file {name} not installed")
    return Path(p)


def _real_seg_paths() -> dict[str, Path]:
    data_store = pytest.importorskip("data_store")
    folder = Path(data_store.__file__).parent / "data"
    out = {"liver.dcm": folder / "liver.dcm", "liver_expb.dcm": folder / "liver_expb.dcm"}
    out["liver_1frame.dcm"] = pydicom_test_file("liver_1frame.dcm")
    for name, p in out.items():
        if not p.exists():
            pytest.skip(f"test file {name} not installed")
    return out


def volume_from_seg_planes(ds: Any) -> Volume:
    """A Volume whose slices are exactly the SEG's plane positions (the CT is not shipped)."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    ipps = sorted(
        {
            tuple(float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
            for item in list(ds.PerFrameFunctionalGroupsSequence)[:n]
        },
        key=lambda p: float(np.dot(p, normal)),
    )
    pos = [float(np.dot(p, normal)) for p in ipps]
    dz = (
        float(np.mean(np.diff(pos)))
        if len(pos) > 1
        else float(shared.PixelMeasuresSequence[0].SliceThickness)
    )
    return volume_from_geometry(
        (len(ipps), int(ds.Rows), int(ds.Columns)),
        (dz, ps[0], ps[1]),
        ipps[0],  # type: ignore[arg-type]
        np.stack([normal, col, row], axis=1),
        str(ds.FrameOfReferenceUID),
    )


@pytest.mark.parametrize("name", ["liver.dcm", "liver_expb.dcm", "liver_1frame.dcm"])
def test_real_seg_matches_highdicom(name: str) -> None:
    paths = _real_seg_paths()
    path = paths[name]
    ds = pydicom.dcmread(path)
    vol = volume_from_seg_planes(ds)
    labels = seg_to_labels(path, vol)
    # highdicom reads only little endian: compare the big endian file with its LE twin
    ref_path = paths["liver.dcm"] if name == "liver_expb.dcm" else path
    hvol = hd.seg.segread(ref_path).get_volume(combine_segments=True)
    expected = resample_nearest(np.asarray(hvol.array), hvol.affine, vol)
    assert labels.mask.shape == expected.shape
    np.testing.assert_array_equal(labels.mask, expected)
    assert labels.mask.sum() > 1000
    assert labels.names == {1: "Liver"}
    # codes are kept as the file states them (here legacy SNOMED RT: SRT T-62000)
    assert labels.codes[1] == {"scheme": "SRT", "value": "T-62000", "meaning": "Liver"}
    assert 1 in labels.colors
    assert referenced_series_uids(path) == {str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)}


def test_real_seg_on_wrong_grid() -> None:
    path = _real_seg_paths()["liver.dcm"]
    vol = volume_from_seg_planes(pydicom.dcmread(path))
    half = copy.copy(vol)
    half.spacing = (vol.spacing[0], vol.spacing[1] * 2, vol.spacing[2] * 2)
    half.pixels = np.zeros((3, 256, 256), dtype=np.int16)
    with pytest.raises(InvalidInput, match="does not match the image"):
        seg_to_labels(path, half)


# --------------------------------------------------------------------------------------------
# RTSTRUCT


def test_rtstruct_matches_independent_and_truth(study: SyntheticStudy, volume: Volume) -> None:
    assert study.rtstruct_file is not None
    labels = rtstruct_to_labels(study.rtstruct_file, volume)
    assert labels.source == "RTSTRUCT"
    assert labels.names == {1: "liver", 2: "liver tumour"}
    assert labels.colors == {1: (165, 80, 40, 255), 2: (255, 40, 40, 255)}
    assert labels.source_uid == study.rtstruct_uid
    rt = pydicom.dcmread(study.rtstruct_file)
    ref, numbers = independent_rasterise(rt, volume)
    assert numbers == [1, 2]
    for value in (1, 2):
        assert dice(labels.mask == value, ref == value) >= 0.99
        assert dice(labels.mask == value, study.truth_labels == value) >= 0.9
    assert referenced_series_uids(study.rtstruct_file) == {study.series_uid}
    assert referenced_instance_uids(study.rtstruct_file) == set(study.sop_instance_uids)


def test_rtstruct_oblique(oblique: SyntheticStudy, oblique_volume: Volume) -> None:
    assert oblique.rtstruct_file is not None
    labels = rtstruct_to_labels(oblique.rtstruct_file, oblique_volume)
    ref, _ = independent_rasterise(pydicom.dcmread(oblique.rtstruct_file), oblique_volume)
    for value in (1, 2):
        assert dice(labels.mask == value, ref == value) >= 0.99
        assert dice(labels.mask == value, oblique.truth_labels == value) >= 0.9


def test_rtstruct_holes_even_odd(study: SyntheticStudy, volume: Volume) -> None:
    """A second contour inside the first on the same slice punches a hole."""
    rt = pydicom.dcmread(study.rtstruct_file)
    roi = rt.ROIContourSequence[0]
    k = SHAPE[0] // 2
    origin = np.asarray(volume.origin) + volume.direction[:, 0] * volume.spacing[0] * k
    row, col = volume.direction[:, 2], volume.direction[:, 1]

    def square(y0: float, x0: float, size: float) -> list[float]:
        corners = [(y0, x0), (y0, x0 + size), (y0 + size, x0 + size), (y0 + size, x0)]
        pts = [
            origin + x * volume.spacing[2] * row + y * volume.spacing[1] * col for y, x in corners
        ]
        return [round(float(v), 4) for p in pts for v in p]

    outer, inner = copy.deepcopy(roi.ContourSequence[0]), copy.deepcopy(roi.ContourSequence[0])
    for c, data in ((outer, square(9.5, 9.5, 20)), (inner, square(14.5, 14.5, 10))):
        del c.ContourImageSequence
        c.ContourData = data
        c.NumberOfContourPoints = 4
    roi.ContourSequence = [outer, inner]
    rt.ROIContourSequence = [roi]
    labels = rtstruct_to_labels(rt, volume)
    plane = labels.mask[k] == 1
    assert plane[10:30, 10:30].sum() == 400 - 100
    assert not plane[15:25, 15:25].any()
    assert labels.mask.sum() == 300


def test_rtstruct_geometry_mismatch(study: SyntheticStudy, volume: Volume) -> None:
    rt = pydicom.dcmread(study.rtstruct_file)
    other = copy.deepcopy(rt)
    for item in other.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "2.25.98765"
    other.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "2.25.98765"
    with pytest.raises(InvalidInput, match="frame of reference") as e1:
        rtstruct_to_labels(other, volume)

    def moved(dz: float) -> Any:
        out = copy.deepcopy(rt)
        for roi in out.ROIContourSequence:
            for c in roi.ContourSequence:
                pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
                pts[:, 2] += dz
                c.ContourData = [round(float(v), 4) for v in pts.ravel()]
        return out

    # 0.4 of a slice off the grid: within the default tolerance (half a gap), not within 0.25
    labels = rtstruct_to_labels(moved(SPACING[0] * 0.4), volume)
    assert dice(labels.mask > 0, study.truth_labels > 0) > 0.99
    with pytest.raises(InvalidInput, match="between slices") as e2:
        rtstruct_to_labels(moved(SPACING[0] * 0.4), volume, slice_tolerance=0.25)
    # beyond the last slice
    with pytest.raises(InvalidInput, match="outside the image") as e3:
        rtstruct_to_labels(moved(SPACING[0] * SHAPE[0]), volume)
    # a contour that is not in a slice plane
    tilted = copy.deepcopy(rt)
    c = tilted.ROIContourSequence[0].ContourSequence[0]
    pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
    pts[:, 2] += np.linspace(-SPACING[0], SPACING[0], len(pts)) * 0.4
    c.ContourData = [round(float(v), 4) for v in pts.ravel()]
    with pytest.raises(InvalidInput, match="not parallel") as e4:
        rtstruct_to_labels(tilted, volume)
    for e in (e1, e2, e3, e4):
        assert_no_canary(e.value, study)

    with pytest.raises(InvalidInput, match="RT Structure Set"):
        rtstruct_to_labels(study.seg_file, volume)


def test_rtstruct_skips_contours_of_other_series(study: SyntheticStudy, volume: Volume) -> None:
    rt = pydicom.dcmread(study.rtstruct_file)
    for roi in rt.ROIContourSequence:
        for c in roi.ContourSequence:
            c.ContourImageSequence[0].ReferencedSOPInstanceUID = "2.25.5555"
    labels = rtstruct_to_labels(rt, volume)
    assert labels.names == {1: "liver", 2: "liver tumour"}
    assert not labels.mask.any()


def test_real_rtstruct() -> None:
    path = pydicom_test_file("rtstruct.dcm")
    rt = pydicom.dcmread(path, force=True)
    # contours lie at z = -200, -190, -180 within |x|, |y| <= 200
    vol = volume_from_geometry(
        (3, 106, 106),
        (10.0, 4.0, 4.0),
        (-210.0, -210.0, -200.0),
        np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]),
        str(rt.StructureSetROISequence[0].ReferencedFrameOfReferenceUID),
    )
    labels = rtstruct_to_labels(path, vol)
    assert labels.names == {1: "patient"}  # the two isocentres are POINT ROIs
    assert labels.colors == {1: (220, 160, 120, 255)}
    ref, _ = independent_rasterise(rt, vol)
    assert dice(labels.mask == 1, ref == 1) >= 0.99
    assert (labels.mask == 1).sum() > 3000
    assert all(labels.mask[k].any() for k in range(3))
    assert referenced_series_uids(path) == {"1.2.826.0.1.3680043.8.498.2010020400001.2.1.1"}


# --------------------------------------------------------------------------------------------
# NIfTI


def test_nifti_exact(study: SyntheticStudy, volume: Volume) -> None:
    assert study.nifti_file is not None
    labels = nifti_to_labels(study.nifti_file, volume, names={1: "liver", 2: "liver tumour"})
    assert labels.source == "NIFTI"
    np.testing.assert_array_equal(labels.mask, study.truth_labels)
    assert labels.names == {1: "liver", 2: "liver tumour"}
    assert nifti_to_labels(study.nifti_file, volume).names == {1: "label 1", 2: "label 2"}


def test_nifti_oblique_and_reoriented(
    oblique: SyntheticStudy,
    oblique_volume: Volume,
    study: SyntheticStudy,
    volume: Volume,
    tmp_path: Path,
) -> None:
    assert oblique.nifti_file is not None
    labels = nifti_to_labels(oblique.nifti_file, oblique_volume)
    np.testing.assert_array_equal(labels.mask, oblique.truth_labels)
    # the same labels reoriented to RAS+ canonical (axes flipped) map back exactly
    img = nib.as_closest_canonical(nib.load(study.nifti_file))
    assert not np.allclose(img.affine, nib.load(study.nifti_file).affine)
    p = tmp_path / "canonical.nii.gz"
    nib.save(img, p)
    np.testing.assert_array_equal(nifti_to_labels(p, volume).mask, study.truth_labels)


def test_nifti_geometry_mismatch(study: SyntheticStudy, volume: Volume, tmp_path: Path) -> None:
    img = nib.load(study.nifti_file)
    data = np.asarray(img.dataobj)
    shifted = img.affine.copy()
    shifted[:3, 3] += [0.0, 5.0, 0.0]
    p = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(data, shifted), p)
    with pytest.raises(InvalidInput, match="label geometry does not match the image") as e:
        nifti_to_labels(p, volume)
    assert "max deviation 5 mm" in str(e.value)

    p2 = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, :-1], img.affine), p2)
    with pytest.raises(InvalidInput, match="label geometry does not match the image"):
        nifti_to_labels(p2, volume)

    p3 = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32) + 0.25, img.affine), p3)
    with pytest.raises(InvalidInput, match="integer"):
        nifti_to_labels(p3, volume)

    p4 = tmp_path / "not-nifti.nii.gz"
    p4.write_bytes(b"nonsense")
    with pytest.raises(InvalidInput, match="cannot read"):
        nifti_to_labels(p4, volume)
