"""Hostile and odd inputs: bounded memory, no hangs, nothing read outside the sources, and every
file pydicom can read (preamble-less, without file meta) read the same way by every step.

Bombs are crafted cheaply: a deflate stream of N MiB of zeros is one compressed 1 MiB block
repeated N times (each block ends with a full flush, so the blocks are identical), and an RLE
or native file only has to *declare* a huge image.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from atlas.errors import InvalidInput  # noqa: E402
from atlas.ingest.discover import discover  # noqa: E402
from atlas.ingest.driver import ingest  # noqa: E402
from atlas.ingest.geometry import split_series  # noqa: E402
from atlas.ingest.pixels import load_volume  # noqa: E402
from atlas.ingest.safe_io import LimitExceeded, ReadLimits, parse_size  # noqa: E402
from atlas.ingest.series import IngestOptions  # noqa: E402
from atlas.storage import open_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SECRET_ENV = "ATLAS_TEST_SITE_SECRET"
SECRET = "test-site-key-not-for-production-0123456789"
MiB = 1024**2
#: the small limit the tests run with
CAP = 16 * MiB
PYDICOM_DATA = Path(get_testdata_file("CT_small.dcm") or "").parent


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def reasons_by_name(found) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {Path(q.ref.member or q.ref.path).name: q.reason for q in found.quarantined}


def ct_slice(path: Path, z: float = 0.0, series_uid: str | None = None) -> Path:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    ds.ImagePositionPatient = [0, 0, z]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


# ----------------------------------------------------------------------------------------
# crafted bombs


def zero_deflate(prefix: bytes, mib: int) -> bytes:
    """A raw deflate stream of ``prefix`` followed by ``mib`` MiB of zeros (a few KB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH) == block
    return head + block * mib + c.flush()


def rle_bomb(path: Path, side: int = 65535) -> Path:
    """An RLE file of a few KB that declares ``side`` x ``side`` 16-bit pixels."""
    ds = pydicom.dcmread(pydicom_file("MR_small_RLE.dcm"))
    ds.Rows = ds.Columns = side
    ds.ImageType = ["ORIGINAL", "PRIMARY"]  # nothing else screens it out before decoding
    ds.BurnedInAnnotation = "NO"
    ds.save_as(path)
    return path


def deflate_bomb(path: Path, mib: int) -> Path:
    """A Deflated Explicit VR Little Endian file of a small image whose body inflates to
    ``mib`` MiB (a private OB element of zeros before the pixel data)."""
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    meta = ds.file_meta
    meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    body = bytearray()
    for elem in ds:
        if elem.tag.group >= 0x0009:
            break
        body += _explicit_le(elem)
    # (0009,0010) private creator, then a huge private OB value of zeros
    body += struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 6) + b"BOMB  "
    body += struct.pack("<HH2sHI", 0x0009, 0x1000, b"OB", 0, mib * MiB)
    with open(path, "wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(
            pydicom.filebase.DicomFileLike(fh), meta, enforce_standard=True
        )
        fh.write(zero_deflate(bytes(body), mib))
    return path


def _explicit_le(elem) -> bytes:  # type: ignore[no-untyped-def]
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_data_element(buf, elem)
    return buf.getvalue()


def zip_bomb(path: Path, mib: int) -> Path:
    """A valid zip archive (CRC and sizes right) whose one member inflates to ``mib`` MiB."""
    data = zero_deflate(b"", mib)
    crc = 0
    zeros = bytes(MiB)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    name = b"study/bomb.dcm"
    size = mib * MiB
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    with open(path, "wb") as fh:
        fh.write(local + name + data)
        offset = fh.tell()
        fh.write(central + name)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central + name), offset, 0))
    with zipfile.ZipFile(path) as zf:  # a real archive: zipfile agrees on size and name
        assert zf.getinfo("study/bomb.dcm").file_size == size
    return path


def test_declared_size_over_the_limit_is_quarantined(tmp_path: Path) -> None:
    bomb = rle_bomb(tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 16 * 1024
    for limits in (ReadLimits(CAP), ReadLimits()):  # the default limit refuses it too
        found = discover([tmp_path], limits=limits)
        assert not found.series
        assert "over the limit" in reasons_by_name(found)["bomb.dcm"]


def test_rle_data_too_short_for_its_declared_size_is_quarantined(tmp_path: Path) -> None:
    rle_bomb(tmp_path / "bomb.dcm", side=4096)  # 32 MiB declared: under the default limit
    found = discover([tmp_path])
    assert reasons_by_name(found)["bomb.dcm"].startswith("RLE pixel data is too short")
    ok = discover([pydicom_file("MR_small_RLE.dcm"), pydicom_file("SC_rgb_rle_32bit.dcm")])
    assert not ok.quarantined and len(ok.series) == 2  # real RLE files pass


def test_pixel_data_far_longer_than_declared_is_quarantined(tmp_path: Path) -> None:
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # 128 x 128 x 16 bit
    ds.Rows = ds.Columns = 4  # 32 bytes declared; the 32 KiB of pixel data stay
    ds.save_as(tmp_path / "long.dcm")
    found = discover([tmp_path])
    assert reasons_by_name(found)["long.dcm"].startswith("pixel data is far longer")


def test_volume_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    uid = generate_uid()
    for k in range(4):  # 4 slices of 32 KiB: each under a 100 KB limit, the volume over
        ct_slice(tmp_path / "ct" / f"{k}.dcm", z=2.0 * k, series_uid=uid)
    limits = ReadLimits(100_000)
    found = discover([tmp_path], limits=limits)
    assert not found.quarantined
    (volume,), _ = split_series(found.series[0])
    with pytest.raises(LimitExceeded, match="over the limit"):
        load_volume(volume, limits=limits)
    assert load_volume(volume).pixels.shape == (4, 128, 128)  # the default limit is fine
    store = open_store(tmp_path / "store")
    summary = ingest([tmp_path / "ct"], store=store, site="s", collection="c",
                     scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV,
                                           max_image_bytes=100_000))  # fmt: skip
    assert not summary.images
    assert {q.reason for q in summary.quarantined} == {
        "volume would decode to 128.0 KiB, over the limit of 97.7 KiB "
        "(raise --max-image-bytes to accept it)"
    }
    assert not (tmp_path / "store" / "c").exists()  # nothing partial written


def test_deflate_and_zip_bombs_are_quarantined(tmp_path: Path) -> None:
    deflate_bomb(tmp_path / "deflated.dcm", 64)
    zip_bomb(tmp_path / "export.zip", 64)
    found = discover([tmp_path], limits=ReadLimits(CAP))
    reasons = reasons_by_name(found)
    assert reasons["deflated.dcm"].startswith("deflated data inflates to more than 32.0 MiB")
    assert reasons["bomb.dcm"].startswith("zip member holds more than 32.0 MiB")
    # under a limit that fits them, the same files are read (and refused for what they are)
    roomy = reasons_by_name(discover([tmp_path], limits=ReadLimits(128 * MiB)))
    assert "limit" not in roomy["deflated.dcm"] and "limit" not in roomy["bomb.dcm"]


_MEASURE = r"""
import json, os, sys
from atlas.ingest.driver import ingest
from atlas.ingest.series import IngestOptions
from atlas.storage import open_store

def status(field):
    with open("/proc/self/status") as fh:
        line = next(l for l in fh if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

warm, src, store, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = IngestOptions(secret_env="ATLAS_TEST_SITE_SECRET", max_image_bytes=cap)
# warm up on a good file: every module and cache a normal ingest loads is loaded now
ingest([warm], store=open_store(store), site="s", collection="c", scheduler="synchronous",
       options=options)
try:  # reset the peak (VmHWM) to the current RSS; where not allowed the warm-up peak stays
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
base = status("VmRSS")
summary = ingest([src], store=open_store(store), site="s", collection="c",
                 scheduler="synchronous", options=options)
print(json.dumps({"base": base, "peak": status("VmHWM"), "images": len(summary.images),
                  "reasons": [q.reason for q in summary.quarantined]}))
"""


@pytest.mark.parametrize("kind", ["rle", "deflate", "zip"])
def test_ingest_memory_stays_bounded_on_bombs(tmp_path: Path, kind: str) -> None:
    """Peak RSS of a whole ingest (in a fresh process) stays far below what the bomb
    declares or inflates to: the limit, not the input, bounds memory."""
    bomb_mib = 1024
    src = tmp_path / "src"
    src.mkdir()
    if kind == "rle":
        rle_bomb(src / "bomb.dcm", side=23170)  # 23170^2 x 2 bytes: 1 GiB declared
    elif kind == "deflate":
        deflate_bomb(src / "bomb.dcm", bomb_mib)
    else:
        zip_bomb(src / "bomb.zip", bomb_mib)
    ct_slice(src / "ok.dcm", series_uid=generate_uid())  # a good file beside it is ingested
    assert sum(p.stat().st_size for p in src.iterdir()) < 4 * MiB
    env = {**os.environ, SECRET_ENV: SECRET,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    ct_slice(tmp_path / "warm" / "warm.dcm")
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "warm"), str(src),
         str(tmp_path / "store"), str(CAP)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = result["peak"] - result["base"]
    print(f"{kind}: peak RSS grew by {grown / MiB:.1f} MiB")
    assert result["images"] == 1
    assert len(result["reasons"]) == 1 and "limit" in result["reasons"][0], result["reasons"]
    # the bomb is 1 GiB; the limit 16 MiB (objects 32 MiB, 8 MiB of a spool in memory)
    assert grown < 160 * MiB, f"peak grew by {grown / MiB:.0f} MiB for a {bomb_mib} MiB bomb"


def test_parse_size() -> None:
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("64m") == 64 * 10**6
    assert parse_size("1000") == 1000
    for bad in ("banana", "-5MB", "0", "5 iB", ""):
        with pytest.raises(InvalidInput):
            parse_size(bad)
    with pytest.raises(InvalidInput):
        ReadLimits(0)


def test_cli_rejects_a_bad_limit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from atlas.cli.app import app

    result = CliRunner().invoke(
        app, ["ingest", str(tmp_path), "--site", "s", "--collection", "c",
              "--store", str(tmp_path / "store"), "--max-image-bytes", "banana"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "max-image-bytes" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------------------
# regular files only; nothing outside the sources


def _discover_with_timeout(sources: list[Path], seconds: float = 20.0):  # type: ignore[no-untyped-def]
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.update(found=discover(sources)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "discovery blocked"
    return out["found"]


def test_named_pipe_and_devices_are_not_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    ct_slice(src / "ok.dcm")
    os.mkfifo(src / "pipe.dcm")
    os.mkfifo(src / "pipe.nii.gz")
    os.mkfifo(tmp_path / "given-pipe")
    found = _discover_with_timeout([src, tmp_path / "given-pipe", Path("/dev/zero")])
    reasons = reasons_by_name(found)
    assert reasons["pipe.dcm"] == "not a regular file (a named pipe); only regular files are read"
    assert reasons["pipe.nii.gz"].startswith("not a regular file (a named pipe)")
    assert reasons["given-pipe"].startswith("not a regular file (a named pipe)")
    assert reasons["zero"].startswith("not a regular file (a character device)")
    assert not found.nifti
    assert [len(s.instances) for s in found.series] == [1]


def test_symlinks_are_followed_only_inside_the_sources(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    secret = ct_slice(outside / "secret.dcm")
    ct_slice(outside / "folder" / "other.dcm")
    src = tmp_path / "src"
    inside = ct_slice(src / "real" / "ok.dcm")
    (src / "zero.dcm").symlink_to("/dev/zero")
    (src / "file-out.dcm").symlink_to(secret)
    (src / "dir-out").symlink_to(outside / "folder", target_is_directory=True)
    (src / "dir-in").symlink_to(src / "real", target_is_directory=True)  # same file again
    (src / "real" / "loop").symlink_to(src, target_is_directory=True)
    (src / "broken.dcm").symlink_to(tmp_path / "nowhere.dcm")
    second = tmp_path / "second"  # a link into another given source is inside the sources
    ct_slice(second / "b.dcm")
    (src / "to-second.dcm").symlink_to(second / "b.dcm")

    found = _discover_with_timeout([src, second])
    reasons = reasons_by_name(found)
    outside_reason = "symbolic link points outside the sources (not followed)"
    assert reasons == {
        "zero.dcm": outside_reason,
        "file-out.dcm": outside_reason,
        "dir-out": outside_reason,
        "broken.dcm": "broken symbolic link",
    }
    read = sorted(os.path.realpath(i.ref.path) for s in found.series for i in s.instances)
    assert read == sorted([os.path.realpath(inside), os.path.realpath(second / "b.dcm")])
    # a symlink the operator names as a source is their choice (regular files only)
    named = discover([src / "file-out.dcm"])
    assert [len(s.instances) for s in named.series] == [1]


def _media_with_dicomdir(tmp_path: Path) -> tuple[Path, Path, list]:  # type: ignore[type-arg]
    source = pydicom_file("DICOMDIR").parent
    media = tmp_path / "media"
    shutil.copytree(source, media, ignore=shutil.ignore_patterns("TINY_ALPHA", "DICOMDIR-*"))
    ds = pydicom.dcmread(media / "DICOMDIR")
    records = [r for r in ds.DirectoryRecordSequence if r.get("ReferencedFileID")]
    return media, media / "DICOMDIR", records


def test_dicomdir_references_outside_its_folder_are_refused(tmp_path: Path) -> None:
    secret = ct_slice(tmp_path / "secret.dcm")
    media, dicomdir, _ = _media_with_dicomdir(tmp_path)
    ds = pydicom.dcmread(dicomdir)
    records = [r for r in ds.DirectoryRecordSequence if r.get("ReferencedFileID")]
    records[0].ReferencedFileID = ["..", "secret.dcm"]
    records[1].ReferencedFileID = str(secret)  # absolute
    (media / "LINK").symlink_to(secret)
    records[2].ReferencedFileID = "LINK"  # a symlink inside the media that leads out
    ds.save_as(dicomdir)
    found = discover([dicomdir])
    refused = [q for q in found.quarantined if "outside its own folder" in q.reason]
    assert len(refused) == 3
    read = {os.path.realpath(i.ref.path) for s in found.series for i in s.instances}
    assert os.path.realpath(secret) not in read
    assert len(read) == len(records) - 3


# ----------------------------------------------------------------------------------------
# files without preamble or file meta: read as pydicom reads them, by every step


def _bare_copy(src: Path, dst: Path) -> Path:
    """``src`` without preamble and file meta (the data set alone, in its own encoding)."""
    ds = pydicom.dcmread(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    implicit, little = ds.original_encoding
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(dst, ds, enforce_file_format=False, implicit_vr=implicit,
                     little_endian=little)  # fmt: skip
    assert dst.read_bytes()[128:132] != b"DICM"
    return dst


def test_every_preambleless_pydicom_file_is_classified_like_pydicom() -> None:
    files = sorted(glob.glob(str(PYDICOM_DATA / "*.dcm")))
    bare = [Path(f) for f in files if Path(f).read_bytes()[128:132] != b"DICM"]
    assert len(bare) >= 3  # rtstruct.dcm, ExplVR_*NoMeta.dcm, no_meta.dcm, ...
    found = discover(bare)
    reasons = reasons_by_name(found)
    for path in bare:
        try:
            ds = pydicom.dcmread(path, force=True)
            usable = "SOPClassUID" in ds and "SOPInstanceUID" in ds
        except Exception:
            usable = False
        if usable:  # pydicom reads it as a data set: so does ingest
            assert reasons.get(path.name, "") not in ("not a DICOM file",), path.name
            assert not reasons.get(path.name, "").startswith("corrupt"), path.name
            if "PixelData" not in ds and ds.get("Modality") not in ("RTSTRUCT", "SEG"):
                assert reasons[path.name] == "no pixel data"
    assert {i.modality for i in found.segmentations} == {"RTSTRUCT"}


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"]
)
def test_preambleless_images_ingest_like_the_originals(tmp_path: Path, name: str) -> None:
    bare = _bare_copy(pydicom_file(name), tmp_path / "src" / "bare.dcm")
    store = open_store(tmp_path / "store")
    summary = ingest([bare.parent], store=store, site="s", collection="c",
                     scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV))  # fmt: skip
    assert not summary.quarantined, [q.reason for q in summary.quarantined]
    from atlas.ome import open_image

    (path,) = summary.images
    stored = np.asarray(open_image(store, path).read(0))
    original = pydicom.dcmread(pydicom_file(name))
    expected = pydicom.pixels.apply_modality_lut(original.pixel_array, original)
    np.testing.assert_array_equal(stored.reshape(expected.shape), expected)


def test_preambleless_rtstruct_is_attached(tmp_path: Path) -> None:
    from atlas.testing.synthetic import make_study

    study = make_study(tmp_path / "study", shape=(8, 48, 48), seed=5, with_seg=False,
                       with_nifti=False)  # fmt: skip
    assert study.rtstruct_file is not None
    bare = _bare_copy(study.rtstruct_file, tmp_path / "rt-bare.dcm")
    store = open_store(tmp_path / "store")
    summary = ingest([study.ct_files[0].parent, bare], store=store, site="s", collection="c",
                     scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV))  # fmt: skip
    assert summary.quarantined == [], [q.reason for q in summary.quarantined]
    from atlas.ome import open_image

    (path,) = summary.images
    assert [n.split("-")[0] for n in open_image(store, path).metadata.labels] == ["rtstruct"]


def test_pydicom_rtstruct_without_preamble_is_read_by_every_step(tmp_path: Path) -> None:
    """pydicom's own ``rtstruct.dcm`` ships without preamble or file meta: discovery, the
    reference matching and the label reader all read it (before, matching called it
    unreadable)."""
    rt = pydicom.dcmread(pydicom_file("rtstruct.dcm"), force=True)
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    for k in range(3):
        ds = pydicom.dcmread(ct_slice(tmp_path / "ct" / f"{k}.dcm", z=float(k)))
        ds.SeriesInstanceUID = series.SeriesInstanceUID
        ds.FrameOfReferenceUID = frame.FrameOfReferenceUID
        ds.save_as(tmp_path / "ct" / f"{k}.dcm")
    shutil.copy(pydicom_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")
    store = open_store(tmp_path / "store")
    summary = ingest([tmp_path / "ct", tmp_path / "rtstruct.dcm"], store=store, site="s",
                     collection="c", scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV))  # fmt: skip
    assert len(summary.images) == 1
    for q in summary.quarantined:  # its contours may not fit this made-up grid, but it is read
        assert "unreadable" not in q.reason and "cannot read" not in q.reason, q.reason


# ----------------------------------------------------------------------------------------
# NIfTI: one bad file is quarantined, the run goes on


def test_bad_nifti_files_are_quarantined_and_the_run_goes_on(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    from atlas.ingest.driver import write_report

    src = tmp_path / "src"
    src.mkdir()
    eye = np.eye(4)
    nib.save(nib.Nifti1Image(np.arange(512, dtype=np.int16).reshape(8, 8, 8), eye),
             src / "good.nii.gz")  # fmt: skip
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.complex64), eye), src / "complex.nii")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint64), eye, dtype=np.uint64),
             src / "uint64.nii")  # fmt: skip
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, eye), src / "rgb.nii")
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 4000, (32, 32, 32)).astype(np.int16)
    for name in ("full.nii", "full.nii.gz"):
        nib.save(nib.Nifti1Image(noise, eye), tmp_path / name)
        whole = (tmp_path / name).read_bytes()
        (src / f"cut-{name}").write_bytes(whole[: len(whole) * 3 // 4])  # header intact
    header = nib.Nifti1Header()  # declares 4000^3 int16 voxels (119 GiB), holds a few bytes
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    header.set_data_offset(352)
    (src / "huge.nii").write_bytes(header.binaryblock + bytes(4) + bytes(1000))

    store = open_store(tmp_path / "store")
    summary = ingest([src], store=store, site="s", collection="c", scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV))  # fmt: skip
    reasons = {Path(q.ref.path).name: q.reason for q in summary.quarantined}
    assert len(summary.images) == 1  # good.nii.gz
    assert reasons["complex.nii"].startswith("unsupported NIfTI data type complex64")
    assert reasons["uint64.nii"].startswith("unsupported NIfTI data type uint64")
    assert reasons["rgb.nii"].startswith("unsupported NIfTI data type RGB")
    assert reasons["cut-full.nii"].startswith("truncated or corrupt NIfTI data")
    assert reasons["cut-full.nii.gz"].startswith("truncated or corrupt NIfTI data")
    assert "over the limit" in reasons["huge.nii"]
    assert len(reasons) == 6
    report = json.loads(write_report(summary, tmp_path / "report.json").read_text())
    assert report["files_quarantined"] == 6


def test_nifti_inside_a_zip_archive_is_read_from_the_member(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "scan.nii.gz")
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        zf.write(tmp_path / "scan.nii.gz", "study/scan.nii.gz")
    (tmp_path / "scan.nii.gz").unlink()
    store = open_store(tmp_path / "store")
    summary = ingest([tmp_path / "export.zip"], store=store, site="s", collection="c",
                     scheduler="synchronous",
                     options=IngestOptions(secret_env=SECRET_ENV))  # fmt: skip
    assert not summary.quarantined, [q.reason for q in summary.quarantined]
    from atlas.ome import open_image

    (path,) = summary.images
    image = open_image(store, path)
    np.testing.assert_array_equal(np.asarray(image.read(0)), np.transpose(data, (2, 1, 0)))
